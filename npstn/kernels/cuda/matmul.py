"""CUDA matrix products for the dense and convolution layers: Numba ``@cuda.jit``.

``gemm`` computes, for device matrices A and B,

    C = op(A) @ op(B) [+ bias[None, :]]           (assign), or
    C += op(A) @ op(B)                             (accumulate=True)

    op(A) = A or A^T (trans_a),  op(B) = B or B^T (trans_b)
    op(A): (M, K),  op(B): (K, N),  C: (M, N)

which covers every product the layers need without materialising a
transpose:

    Linear   forward   Y  = X W^T + b      gemm(X, W, trans_b=True, bias=b)
             backward  dW += G^T X         gemm(G, X, trans_a=True, accumulate=True)
                       dX  = G W           gemm(G, W)
    Conv2d   forward   Y  = W2 cols        gemm(W2, cols)
             backward  dW2 += G cols^T     gemm(G, cols, trans_b=True, accumulate=True)
                       dcols = W2^T G      gemm(W2, G, trans_a=True)

The kernel is shared-memory tiling with register blocking. A block of
T x T threads owns a BM x BN = (T R) x (T R) tile of C and each thread R x R
of its elements (rows ty + i T, columns tx + j T, so stores are coalesced):

    for k0 in 0, BK, 2 BK, ... < K:            (BK = T)
        load op(A)[tile rows, k0:k0+BK] and op(B)[k0:k0+BK, tile cols]
            into shared memory, every read running along the operand's
            contiguous axis (a transposed operand is transposed on the way in)
        syncthreads
        acc[i, j] += sum_kk sa[ty + i T, kk] * sb[kk, tx + j T]
        syncthreads
    C[row, col] = acc (+ bias[col])   or   C[row, col] += acc

Elements past the edges of A and B load as 0 and only elements inside C
are stored, so any M, N, K (not multiples of the tile, or 1) is safe.

Split-K: when C has too few tiles to occupy the GPU but K is long (the
weight gradients: dW = G^T X sums over the batch, dW2 = G cols^T over
N*H_out*W_out, e.g. 64 x 81 outputs summed over 300k terms for the CNN's
first convolution), blockIdx.z cuts K into S slices; slice z writes its
partial product to a workspace P[z] (S, M, N), and a second kernel forms
C (+)= sum_z P[z] (+ bias) in the order z = 0, 1, ..., so results do not
depend on scheduling (no atomics anywhere: the same inputs give the same bits).

The sums run in the arrays' dtype, like BLAS (a GPU fuses multiply-adds);
the order of the additions differs from BLAS, so results agree to rounding.
Block rows loop over the grid (grid-stride), so M may exceed the
65535-block limit of the grid's y dimension.

``sum_axis`` is the bias gradient: out[j] (+)= sum_i A[i, j] (axis=0, Linear's
dL/db = sum over the batch of G) or out[i] (+)= sum_j A[i, j] (axis=1,
Conv2d's dL/db = sum over the N*H_out*W_out columns of G). One block per
output element; its threads stride over the summed axis and combine their
partial sums with a shared-memory tree, in float64.

TILE = (T, R) is (16, 4) on a GPU: 64 x 64 tiles of C, 256 threads a block.
In the CUDA simulator, which runs every thread as a Python thread (a few
hundred microseconds each), it is (2, 4): the same code with smaller
constants, so tests stay fast and still cross tile edges; tests also run
other (T, R) explicitly.

Arguments must be device arrays of one dtype (float32 or float64); the
layers in :mod:`npstn.nn` validate shapes before calling.
"""
from __future__ import annotations

import numpy as np
from numba import config as _numba_config
from numba import cuda, float32, float64

from npstn.kernels.cuda.common import cuda_module, launch_config

__all__ = ["gemm", "sum_axis", "TILE", "REDUCE_THREADS"]

_SIM = bool(_numba_config.ENABLE_CUDASIM)
#: (T, R): a block of T x T threads computes a (T R) x (T R) tile of C, R x R
#: outputs per thread (64 x 64 tiles of 256 threads on a GPU).
TILE = (2, 4) if _SIM else (16, 4)
#: Threads of a reduction block (a power of two).
REDUCE_THREADS = 8 if _SIM else 256
#: Most blocks along the grid's y and z dimensions (CUDA's limits).
_MAX_GRID_Y = 65535
_MAX_GRID_Z = 65535
#: Split-K: aim for this many blocks (about two per SM of an H100), cut K into at
#: most MAX_SPLITS slices of at least SPLIT_K_MIN each.
TARGET_BLOCKS = 8 if _SIM else 264
MAX_SPLITS = 4 if _SIM else 64
SPLIT_K_MIN = 8 if _SIM else 256

_NB_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def _make_gemm(nbtype, T, R):
    """The tiled GEMM kernel for one dtype, thread-block side T and micro-tile R (compile-time constants).

    A block of T x T threads computes a BM x BN = (T R) x (T R) tile of C; thread
    (ty, tx) owns the R x R outputs at rows ty + i T and columns tx + j T
    (i, j < R), so a warp's stores are coalesced. K advances BK = T at a time.
    """
    BM = T * R
    BN = T * R
    BK = T
    NTHREADS = T * T
    SA_SHAPE = (BM, BK + 1)  # constant shapes: one padding column against bank conflicts
    SB_SHAPE = (BK, BN + 1)
    ACC_SHAPE = (R, R)

    @cuda.jit
    def kernel(a, b, c3, bias, trans_a, trans_b, accumulate, has_bias, k_chunk):
        # c3 (S, M, N): split z = blockIdx.z sums k in [z k_chunk, (z + 1) k_chunk) into c3[z]
        # sa[r, k] = op(A)[row0 + r, k0 + k], sb[k, q] = op(B)[k0 + k, col0 + q]
        sa = cuda.shared.array(SA_SHAPE, nbtype)
        sb = cuda.shared.array(SB_SHAPE, nbtype)
        acc = cuda.local.array(ACC_SHAPE, nbtype)
        af = cuda.local.array(R, nbtype)
        bf = cuda.local.array(R, nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * T + tx
        z = cuda.blockIdx.z
        m = c3.shape[1]
        n = c3.shape[2]
        if trans_a:
            k_total = a.shape[0]
        else:
            k_total = a.shape[1]
        k_lo = z * k_chunk
        k_hi = k_lo + k_chunk
        if k_hi > k_total:
            k_hi = k_total
        col0 = cuda.blockIdx.x * BN
        n_row_blocks = (m + BM - 1) // BM
        for by in range(cuda.blockIdx.y, n_row_blocks, cuda.gridDim.y):
            row0 = by * BM
            for i in range(R):
                for j in range(R):
                    acc[i, j] = nbtype(0)
            for k0 in range(k_lo, k_hi, BK):
                # A tile, read along A's contiguous axis
                for e in range(tid, BM * BK, NTHREADS):
                    if trans_a:  # op(A)[r, k] = a[k, r]
                        r = e % BM
                        kk = e // BM
                    else:
                        kk = e % BK
                        r = e // BK
                    gr = row0 + r
                    gk = k0 + kk
                    if gr < m and gk < k_hi:
                        if trans_a:
                            sa[r, kk] = a[gk, gr]
                        else:
                            sa[r, kk] = a[gr, gk]
                    else:
                        sa[r, kk] = nbtype(0)
                # B tile, read along B's contiguous axis
                for e in range(tid, BK * BN, NTHREADS):
                    if trans_b:  # op(B)[k, q] = b[q, k]
                        kk = e % BK
                        q = e // BK
                    else:
                        q = e % BN
                        kk = e // BN
                    gq = col0 + q
                    gk = k0 + kk
                    if gq < n and gk < k_hi:
                        if trans_b:
                            sb[kk, q] = b[gq, gk]
                        else:
                            sb[kk, q] = b[gk, gq]
                    else:
                        sb[kk, q] = nbtype(0)
                cuda.syncthreads()
                for kk in range(BK):
                    for i in range(R):
                        af[i] = sa[ty + i * T, kk]
                    for j in range(R):
                        bf[j] = sb[kk, tx + j * T]
                    for i in range(R):
                        for j in range(R):
                            acc[i, j] += af[i] * bf[j]
                cuda.syncthreads()
            for i in range(R):
                row = row0 + ty + i * T
                if row < m:
                    for j in range(R):
                        col = col0 + tx + j * T
                        if col < n:
                            v = acc[i, j]
                            if has_bias:
                                v += bias[col]
                            if accumulate:
                                c3[z, row, col] += v
                            else:
                                c3[z, row, col] = v

    return kernel


@cuda.jit
def _split_k_reduce_kernel(parts, out, bias, accumulate, has_bias):
    # out[i, j] (+)= sum_z parts[z, i, j] (+ bias[j]), summed in the fixed order z = 0, 1, ...
    t = cuda.grid(1)
    m = out.shape[0]
    n = out.shape[1]
    if t >= m * n:
        return
    i = t // n
    j = t % n
    v = parts[0, i, j]
    for z in range(1, parts.shape[0]):
        v += parts[z, i, j]
    if has_bias:
        v += bias[j]
    if accumulate:
        out[i, j] += v
    else:
        out[i, j] = v


def _make_sum_axis(NT):
    @cuda.jit
    def kernel(a, out, axis, accumulate):
        # block j computes out[j] = sum over the other axis of a
        buf = cuda.shared.array(NT, float64)
        j = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        if axis == 0:
            n_out = a.shape[1]
            n_sum = a.shape[0]
        else:
            n_out = a.shape[0]
            n_sum = a.shape[1]
        s = 0.0
        if j < n_out:
            for i in range(tid, n_sum, NT):
                if axis == 0:
                    s += a[i, j]
                else:
                    s += a[j, i]
        buf[tid] = s
        cuda.syncthreads()
        step = NT // 2
        while step > 0:
            if tid < step:
                buf[tid] += buf[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0 and j < n_out:
            if accumulate:
                out[j] += buf[0]
            else:
                out[j] = buf[0]

    return kernel


_GEMM_CACHE: dict = {}
_SUM_CACHE: dict = {}
_DUMMY_BIAS: dict = {}


def _gemm_kernel(dtype, tile):
    key = (np.dtype(dtype), int(tile[0]), int(tile[1]))
    k = _GEMM_CACHE.get(key)
    if k is None:
        k = _GEMM_CACHE[key] = _make_gemm(_NB_TYPES[key[0]], key[1], key[2])
    return k


def _dummy(cu, dtype):
    d = _DUMMY_BIAS.get(np.dtype(dtype))
    if d is None:
        d = _DUMMY_BIAS[np.dtype(dtype)] = cu.to_device(np.zeros(1, dtype=dtype))
    return d


def _auto_splits(tiles: int, k: int, bk: int) -> int:
    """How many slices to cut K into: enough blocks to fill the GPU, each slice still long."""
    if tiles >= TARGET_BLOCKS or k < 2 * SPLIT_K_MIN:
        return 1
    return int(max(1, min(MAX_SPLITS, TARGET_BLOCKS // tiles, k // SPLIT_K_MIN)))


def gemm(a, b, out=None, *, trans_a: bool = False, trans_b: bool = False,
         accumulate: bool = False, bias=None, tile: int | None = None, splits: int | None = None):
    """C = op(A) @ op(B) [+ bias] (or C += op(A) @ op(B)) on the device; returns C.

    Parameters
    ----------
    a, b : 2-D device arrays of one dtype; op(A) (M, K), op(B) (K, N).
    out : (M, N) device array of that dtype; required with ``accumulate``,
        else allocated when None.
    trans_a, trans_b : use A^T / B^T (A stored (K, M), B stored (N, K)).
    accumulate : add the product to ``out`` instead of overwriting it.
    bias : optional (N,) device array added to every row (assign mode only).
    tile : (T, R), threads per block side and outputs per thread side
        (default :data:`TILE`); tests use it to try other shapes.
    splits : cut K into this many slices (split-K); None chooses (1 unless C
        has too few tiles to fill the GPU and K is long, as in the weight
        gradients dW = G^T X and dW2 = G cols^T, whose K is the batch or
        N*H_out*W_out). Each slice's partial product goes to a workspace and
        a second kernel adds the slices in a fixed order: deterministic.
    """
    cu = cuda_module()
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if k != kb:
        raise ValueError(f"gemm: inner sizes differ: op(A) is ({m}, {k}), op(B) is ({kb}, {n})")
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        raise TypeError(f"gemm: A has dtype {a.dtype} but B has dtype {b.dtype}")
    if out is None:
        if accumulate:
            raise ValueError("gemm: accumulate=True needs out")
        out = cu.device_array((m, n), dtype=a.dtype)
    elif tuple(out.shape) != (m, n) or np.dtype(out.dtype) != np.dtype(a.dtype):
        raise ValueError(f"gemm: out must be ({m}, {n}) {a.dtype}, got {tuple(out.shape)} {out.dtype}")
    if bias is not None and (accumulate or tuple(bias.shape) != (n,)):
        raise ValueError(f"gemm: bias must be ({n},) and only used without accumulate")
    if m == 0 or n == 0:
        return out
    if k == 0:  # an empty sum: zeros (or nothing to add)
        if not accumulate:
            from npstn.kernels.cuda.elementwise import fill

            fill(out, 0.0)
        return out
    t, r = TILE if tile is None else tile
    kernel = _gemm_kernel(a.dtype, (t, r))
    bm = t * r
    grid_xy = ((n + bm - 1) // bm, min((m + bm - 1) // bm, _MAX_GRID_Y))
    s = _auto_splits(grid_xy[0] * grid_xy[1], k, t) if splits is None else int(splits)
    s = max(1, min(s, k, _MAX_GRID_Z))
    chunk = -(-k // s)
    chunk = -(-chunk // t) * t  # whole K tiles per slice
    s = -(-k // chunk)
    has_bias = bias is not None
    b_arg = bias if has_bias else _dummy(cu, a.dtype)
    if s == 1:  # write C directly, through a (1, M, N) view
        kernel[(grid_xy[0], grid_xy[1], 1), (t, t)](
            a, b, out.reshape(1, m, n), b_arg, bool(trans_a), bool(trans_b), bool(accumulate),
            has_bias, int(chunk))
        return out
    parts = cu.device_array((s, m, n), dtype=a.dtype)
    kernel[(grid_xy[0], grid_xy[1], s), (t, t)](a, b, parts, b_arg, bool(trans_a), bool(trans_b),
                                                False, False, int(chunk))
    blocks, threads = launch_config(m * n)
    _split_k_reduce_kernel[blocks, threads](parts, out, b_arg, bool(accumulate), has_bias)
    return out


def sum_axis(a, axis: int, out=None, *, accumulate: bool = False):
    """Row or column sums of a 2-D device array: (A.shape[1],) for axis=0, (A.shape[0],) for axis=1.

    Sums in float64, stored in ``out``'s dtype; ``accumulate`` adds to ``out``.
    """
    cu = cuda_module()
    if axis not in (0, 1):
        raise ValueError(f"sum_axis: axis must be 0 or 1, got {axis}")
    n_out = a.shape[1] if axis == 0 else a.shape[0]
    if out is None:
        if accumulate:
            raise ValueError("sum_axis: accumulate=True needs out")
        out = cu.device_array((n_out,), dtype=a.dtype)
    elif tuple(out.shape) != (n_out,):
        raise ValueError(f"sum_axis: out must have shape ({n_out},), got {tuple(out.shape)}")
    if n_out == 0:
        return out
    kernel = _SUM_CACHE.get(REDUCE_THREADS)
    if kernel is None:
        kernel = _SUM_CACHE[REDUCE_THREADS] = _make_sum_axis(REDUCE_THREADS)
    kernel[n_out, REDUCE_THREADS](a, out, int(axis), bool(accumulate))
    return out
