"""Hypothesis strategies for 2-D convolution configurations.

``conv_configs()`` draws a valid :class:`ConvConfig`: an input shape and the
arguments of ``Conv2d`` such that the kernel fits in the padded input. It
reaches the awkward cases on purpose: batch 1, one channel, 1x1 kernels,
non-square kernels, a kernel exactly as large as the padded input (a 1x1
output), padding wider than the kernel's half, stride > 1 and stride larger
than the kernel (input pixels that no output reads), odd and non-square
sizes.

    @given(cfg=conv_configs())
    def test_my_conv(cfg):
        conv = Conv2d(**cfg.kwargs()).double()
        x = np.random.default_rng(0).standard_normal(cfg.input_shape)
        assert conv(x).shape == cfg.output_shape
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = ["ConvConfig", "conv_configs"]


@dataclass(frozen=True)
class ConvConfig:
    """One convolution problem: input shape plus Conv2d arguments.

    ``kernel_size``, ``stride`` and ``padding`` are stored as drawn, either an
    int or an (h, w) pair, so that both spellings reach the layer.
    """

    input_shape: tuple  # (N, C, H, W)
    in_channels: int
    out_channels: int
    kernel_size: int | tuple
    stride: int | tuple
    padding: int | tuple
    bias: bool

    @staticmethod
    def _pair(v) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else tuple(v)

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self._pair(self.kernel_size)

    @property
    def stride_hw(self) -> tuple[int, int]:
        return self._pair(self.stride)

    @property
    def padding_hw(self) -> tuple[int, int]:
        return self._pair(self.padding)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """(N, out_channels, H_out, W_out), H_out = floor((H + 2p - k)/s) + 1 as in torch."""
        n, _, h, w = self.input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_hw, self.stride_hw, self.padding_hw
        return (n, self.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def kwargs(self) -> dict:
        """Keyword arguments for ``Conv2d(**cfg.kwargs())`` (and torch.nn.Conv2d)."""
        return dict(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias,
        )


def _int_or_pair(draw, a: int, b: int):
    """``a`` when the pair is square and a coin says so, else the pair (a, b)."""
    if a == b and draw(st.booleans()):
        return a
    return (a, b)


@st.composite
def conv_configs(
    draw,
    max_batch: int = 3,
    max_channels: int = 3,
    max_kernel: int = 4,
    max_stride: int = 3,
    max_padding: int = 2,
    max_hw: int = 7,
):
    """Valid :class:`ConvConfig` values with small sizes (cheap gradient checks).

    Every side is drawn independently; the input side is drawn from
    ``max(1, k - 2p)`` (the kernel exactly fills the padded input) up to
    ``max(max_hw, k - 2p)``, so that every config is valid.
    """
    n = draw(st.integers(1, max_batch))
    c_in = draw(st.integers(1, max_channels))
    c_out = draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    h_min, w_min = max(1, kh - 2 * ph), max(1, kw - 2 * pw)
    # now and then (each side on its own) the kernel exactly fills the padded input
    h = h_min if draw(st.integers(0, 3)) == 0 else draw(st.integers(h_min, max(max_hw, h_min)))
    w = w_min if draw(st.integers(0, 3)) == 0 else draw(st.integers(w_min, max(max_hw, w_min)))
    return ConvConfig(
        input_shape=(n, c_in, h, w),
        in_channels=c_in,
        out_channels=c_out,
        kernel_size=_int_or_pair(draw, kh, kw),
        stride=_int_or_pair(draw, sh, sw),
        padding=_int_or_pair(draw, ph, pw),
        bias=draw(st.booleans()),
    )
