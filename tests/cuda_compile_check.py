"""Compile every CUDA kernel of npstn (training step, 2-D and 3-D sampler) to PTX for sm_90 (no GPU needed).

Run by tests/test_cuda_training.py with NUMBA_ENABLE_CUDASIM=0: the CUDA
simulator executes kernels as Python and so cannot catch what only Numba's
CUDA compiler rejects (typing, unsupported calls). Exit status 77 means NVVM
is not installed (the test skips); 0 means every kernel compiled.
"""
import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from numba import boolean, cuda, float32, float64, int32, int64  # noqa: E402
from numba.types import UniTuple  # noqa: E402
import numpy as np  # noqa: E402

try:
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        raise RuntimeError("NVVM not available")
except Exception as exc:  # pragma: no cover - depends on the installation
    print(f"skipping: cannot compile CUDA kernels here ({exc})")
    sys.exit(77)

# device functions ask the current GPU for its compute capability; there is none here
try:
    import numba.cuda.dispatcher as _dispatcher

    class _FakeDevice:
        compute_capability = (9, 0)

    if hasattr(_dispatcher, "get_current_device"):
        _dispatcher.get_current_device = lambda: _FakeDevice()
except ImportError:  # pragma: no cover - another numba layout
    pass

from npstn.kernels.cuda import concat as cc  # noqa: E402
from npstn.kernels.cuda import elementwise as ew  # noqa: E402
from npstn.kernels.cuda import grid_sample as gs  # noqa: E402
from npstn.kernels.cuda import grid_sample3d as gs3  # noqa: E402
from npstn.kernels.cuda import grids as gr  # noqa: E402
from npstn.kernels.cuda import im2col as ic  # noqa: E402
from npstn.kernels.cuda import loss as lo  # noqa: E402
from npstn.kernels.cuda import matmul as mm  # noqa: E402
from npstn.kernels.cuda import pool as po  # noqa: E402
from npstn.kernels.cuda import projection as pj  # noqa: E402

CC = (9, 0)


def kernels(dt):
    v, m2, m3, m4 = dt[::1], dt[:, ::1], dt[:, :, ::1], dt[:, :, :, ::1]
    i = int64
    b = boolean
    yield "gemm(16,4)", mm._make_gemm(dt, 16, 4), (m2, m2, m3, v, b, b, b, b, i)
    yield "gemm(2,4)", mm._make_gemm(dt, 2, 4), (m2, m2, m3, v, b, b, b, b, i)
    yield "split_k_reduce", mm._split_k_reduce_kernel, (m3, m2, v, b, b)
    yield "sum_axis", mm._make_sum_axis(256), (m2, v, i, b)
    yield "fill", ew._fill_kernel, (v, dt)
    yield "add", ew._add_kernel, (v, v, v)
    yield "mul", ew._mul_kernel, (v, v, v)
    yield "relu_forward", ew._relu_forward_kernel, (v, v)
    yield "relu_backward", ew._relu_backward_kernel, (v, v, v)
    yield "sgd", ew._sgd_kernel, (v, v, v, dt, dt, dt, dt, b, b, b, b)
    yield "adam", ew._adam_kernel, (v, v, v, v, dt, dt, dt, dt, dt, dt, dt, dt, b)
    yield "finite", ew._finite_kernel, (v, int32[::1])
    yield "fill_flag", ew._fill_kernel, (int32[::1], int32)
    yield "im2col", ic._im2col_kernel, (m4, i, i, i, i, i, i, i, i, m2)
    yield "col2im", ic._col2im_kernel, (m2, i, i, i, i, i, i, i, i, m4)
    yield "cols_to_nchw", ic._cols_to_nchw_kernel, (m2, v, b, m3)
    yield "nchw_to_cols", ic._nchw_to_cols_kernel, (m3, m2)
    yield "max_forward", po._max_forward_kernel, (m3, m3, int64[:, :, ::1], i, i, i, i, i, i)
    yield "max_backward", po._max_backward_kernel, (m3, int64[:, :, ::1], i, i, i, i, i, i, m3)
    yield "avg_forward", po._avg_forward_kernel, (m3, m3, i, i, i, i, i, i, b, i)
    yield "avg_backward", po._avg_backward_kernel, (m3, i, i, i, i, i, i, b, i, m3)
    yield "ce_forward", lo._ce_forward_kernel, (m2, int64[::1], m2, v, float64[::1])
    yield "ce_backward", lo._ce_backward_kernel, (m2, int64[::1], dt, v, b, m2)
    yield "argmax", lo._argmax_kernel, (m2, int64[::1])
    yield "count_correct", lo._count_correct_kernel, (m2, int64[::1], int64[::1])
    yield "copy_slab", cc._copy_slab_kernel, (m3, m3, i, i, i)
    # the spatial transformer's kernels, which a device training step runs too
    f, f2 = float64[::1], float64[:, ::1]
    geo = UniTuple(dt, 7)  # (one, scale_x, scale_y, shift, limit, size_x, size_y)
    yield "grid_sample", gs._forward_kernel, (m4, m4, m4, geo, i, i, b)
    yield "grid_sample_backward", gs._backward_kernel, (m4, m4, m4, m4, m4, geo, i, i, b, b)
    yield "zero4", gs._zero_kernel, (m4,)
    yield "affine_grid", gr._affine_grid_kernel, (m3, f, f, m4)
    yield "affine_grid_backward", gr._affine_grid_backward_kernel, (m4, f, f, m3)
    yield "attention_grid", gr._attention_grid_kernel, (m2, f, f, m4)
    yield "attention_grid_backward", gr._attention_grid_backward_kernel, (m4, f, f, m2)
    yield "projective_grid", gr._projective_grid_kernel, (m2, f, f, float64, m4)
    yield "projective_grid_backward", gr._projective_grid_backward_kernel, (m4, m2, f, f, float64, m2)
    yield "tps_grid", gr._tps_grid_kernel, (f2, m3, m4)
    yield "tps_grid_backward", gr._tps_grid_backward_kernel, (f2, m4, m3)
    m5 = dt[:, :, :, :, ::1]
    geo3 = UniTuple(dt, 9)  # (one, scale_x, scale_y, scale_z, shift, limit, size_x, size_y, size_z)
    yield "grid_sample3d", gs3._forward_kernel, (m5, m5, m5, geo3, i, i, b)
    yield "grid_sample3d_backward", gs3._backward_kernel, (m5, m5, m5, m5, m5, geo3, i, i, b, b)
    yield "zero5", gs3._zero_kernel, (m5,)
    yield "affine_grid3d", gr._affine_grid3d_kernel, (m3, f, f, f, m5)
    yield "affine_grid3d_backward", gr._affine_grid3d_backward_kernel, (m5, f, f, f, m3)
    yield "project", pj._forward_kernel, (m5, dt, m4)
    yield "project_backward", pj._backward_kernel, (m4, dt, m5)


def _probe(a):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = 0


try:  # can this installation compile at all without a GPU?
    cuda.compile_ptx(_probe, (float32[::1],), cc=CC)
except Exception as exc:  # pragma: no cover - depends on the installation
    print(f"skipping: cannot compile CUDA kernels here ({type(exc).__name__}: {exc})")
    sys.exit(77)

# A cpu kernel compiles the formulas first, as in any process that ran the cpu backend before the
# cuda one (the tests' references): the CUDA kernels must not pick up the cpu's inlined versions
# (numba-cuda inlines any inline="always" overload compiled for the same argument types; on a GPU,
# every spatial-transformer kernel then failed to compile: see npstn.kernels.formulas.formula).
from numba import njit  # noqa: E402
from npstn.kernels import formulas as fm  # noqa: E402


@njit
def _cpu_point(g, geo, padding_mode, align_corners):
    one, scale, shift, limit, size = geo[0], geo[1], geo[2], geo[3], geo[4]
    ix, dx = fm.source_coordinate(g, one, scale, shift, limit, size, padding_mode, align_corners)
    x0f = fm.floor(ix)
    w = fm.bilinear_weights(ix - x0f, ix - x0f, one)
    t = fm.trilinear_weights(ix - x0f, ix - x0f, ix - x0f, one)
    return fm.bilinear_interpolate(one, one, one, one, w[0], w[1], w[2], w[3]) + t[0] + dx


for _t in (np.float32, np.float64):
    _c = tuple(_t(v) for v in (1.0, 2.0, 0.5, fm.COORD_LIMIT, 5.0, 4.0, 3.0, 5.0, 4.0))
    for _mode in range(3):
        _cpu_point(_t(0.25), _c[:7], _mode, False)
        _cpu_point(_t(0.25), _c, _mode, True)

failures = []
n = 0
for dt in (float32, float64):
    for name, kernel, sig in kernels(dt):
        n += 1
        try:
            cuda.compile_ptx(kernel.py_func, sig, cc=CC)
        except Exception as exc:
            failures.append(f"{name} [{dt}]: {type(exc).__name__}: {exc}")
if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"compiled {n} kernels for sm_{CC[0]}{CC[1]}")
