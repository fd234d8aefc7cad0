"""CUDA concatenation and splitting along one axis (for :class:`npstn.nn.Parallel`): Numba ``@cuda.jit``.

Viewing a C-contiguous array of shape (*lead, S, *trail) as (A, S, B) with
A = prod(lead) and B = prod(trail), concatenation along that axis copies
each part (A, S_i, B) into the slab [o_i, o_i + S_i) of the output
(A, sum S_i, B); splitting (its adjoint, the backward pass) copies the slabs
back out::

    out[a, o_i + s, b] = part_i[a, s, b]          (concat, forward)
    part_i[a, s, b]    = grad[a, o_i + s, b]      (split, backward)

One thread per element of the part; no thread touches anything outside its
part's slab.
"""
from __future__ import annotations

from numba import cuda

from npstn.kernels.cuda.common import cuda_module, launch_config

__all__ = ["concatenate", "split"]


@cuda.jit
def _copy_slab_kernel(src, dst, src_offset, dst_offset, s_len):
    # src (A, S_src, B), dst (A, S_dst, B): dst[a, dst_offset + s, b] = src[a, src_offset + s, b]
    t = cuda.grid(1)
    a_len = src.shape[0]
    b_len = src.shape[2]
    if t >= a_len * s_len * b_len:
        return
    a = t // (s_len * b_len)
    s = (t // b_len) % s_len
    b = t % b_len
    dst[a, dst_offset + s, b] = src[a, src_offset + s, b]


def _as3d(x, axis: int):
    shape = tuple(x.shape)
    a = 1
    for d in shape[:axis]:
        a *= int(d)
    b = 1
    for d in shape[axis + 1:]:
        b *= int(d)
    return x.reshape(a, int(shape[axis]), b)


def _copy(src3, dst3, src_offset, dst_offset, s_len):
    n = src3.shape[0] * s_len * src3.shape[2]
    if n > 0:
        blocks, threads = launch_config(n)
        _copy_slab_kernel[blocks, threads](src3, dst3, int(src_offset), int(dst_offset), int(s_len))


def concatenate(parts, axis: int):
    """Concatenate C-contiguous device arrays (same dtype, same shape but along ``axis``)."""
    cu = cuda_module()
    first = tuple(parts[0].shape)
    axis = axis % len(first)
    shape = list(first)
    shape[axis] = sum(int(p.shape[axis]) for p in parts)
    out = cu.device_array(tuple(shape), dtype=parts[0].dtype)
    out3 = _as3d(out, axis)
    offset = 0
    for p in parts:
        s = int(p.shape[axis])
        _copy(_as3d(p, axis), out3, 0, offset, s)
        offset += s
    return out


def split(x, sizes, axis: int):
    """Split a C-contiguous device array along ``axis`` into new arrays of ``sizes`` there."""
    cu = cuda_module()
    shape = list(x.shape)
    axis = axis % len(shape)
    x3 = _as3d(x, axis)
    outs, offset = [], 0
    for s in sizes:
        shape[axis] = int(s)
        part = cu.device_array(tuple(shape), dtype=x.dtype)
        _copy(x3, _as3d(part, axis), offset, 0, int(s))
        outs.append(part)
        offset += int(s)
    return outs
