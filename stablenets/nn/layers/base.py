r"""What the layer families share: argument checks, stride-1 'same' convolutions with zero or circular padding
and their exact adjoints, and certified operator norms of those convolutions and of per-frequency maps.

Every family reports, through ``lipschitz_bound()``, a certified upper bound of the Lipschitz constant of
its eval-mode map **with the stored parameters, in exact arithmetic** (the convention of
:mod:`stablenets.nn.spectral`): the bound is computed in float64 from the very tensors the eval-mode forward
applies, and enlarged by :data:`~stablenets.nn.power.CERT_SLACK` for the float64 rounding of the SVD/FFT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...checks import check_count
from ..power import CERT_SLACK, conv_norm_bound

PADDING_MODES = ("zeros", "circular")


def check_image_shape(in_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be (C, H, W) with positive entries, got {tuple(in_shape)}")
    return shape


def check_kernel(kernel_size: int, padding_mode: str = "zeros", in_shape: tuple[int, int, int] | None = None) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(
            f"kernel_size must be an odd integer >= 1 (a shape-preserving convolution), got {kernel_size!r}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode == "circular" and in_shape is not None and min(in_shape[1:]) < kernel_size:
        raise ValueError(f"circular padding needs H, W >= kernel_size ({kernel_size}), got in_shape {in_shape}")


def circular_conv_shapes(in_shape, out_channels: int | None, kernel_size: int) -> tuple[tuple, tuple]:
    """``(in_shape, out_shape)`` of a same-size circular convolution, checked; ``out_channels`` defaults to the
    input's."""
    in_shape = check_image_shape(in_shape)
    check_kernel(kernel_size, "circular", in_shape)
    check_count(out_channels=out_channels)
    return in_shape, (out_channels or in_shape[0], *in_shape[1:])


def dense_features(in_features: int, out_features: int | None) -> tuple[int, int]:
    """``(in, out)`` of a dense layer, checked; ``out`` defaults to ``in`` (a square layer)."""
    check_count(in_features=in_features, out_features=out_features)
    return in_features, out_features or in_features


def check_input(x: torch.Tensor, in_shape: tuple[int, int, int], name: str) -> None:
    """A convolutional layer's bound holds for the input shape it was built for: refuse any other."""
    if tuple(x.shape[1:]) != in_shape:
        raise ValueError(
            f"{name} was built for inputs of shape {in_shape} (its certified bound is for that shape), "
            f"got a batch of shape {tuple(x.shape)}"
        )


def conv_same(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None, padding_mode: str = "zeros"
) -> torch.Tensor:
    """Stride-1 'same' cross-correlation with an odd ``k×k`` kernel, zero or circular padding."""
    p = kernel.shape[-1] // 2
    if padding_mode == "circular" and p:
        return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), kernel, bias)
    return F.conv2d(x, kernel, bias, padding=p)


def flip_transpose(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint of :func:`conv_same` (channels swapped, taps reflected)."""
    return kernel.transpose(0, 1).flip(-2, -1)


def conv_same_adjoint(v: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """The exact adjoint of :func:`conv_same` (no bias): ``conv_same`` with the flipped, transposed kernel."""
    return conv_same(v, flip_transpose(kernel), None, padding_mode)


@torch.no_grad()
def circular_conv_norm(kernel: torch.Tensor, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """Exact operator norm (float64, ×(1 + CERT_SLACK)) of the circular stride-1 convolution on ``in_shape``:
    the largest singular value of the kernel's symbol over the ``H×W`` frequencies (``H, W ≥ k``)."""
    _, h, w = in_shape
    symbol = torch.fft.fft2(kernel.detach().double(), s=(h, w))  # (out, in, H, W); a shift only changes phases
    return torch.linalg.matrix_norm(symbol.permute(2, 3, 0, 1), 2).max() * (1 + CERT_SLACK)


def conv_same_norm(kernel: torch.Tensor, in_shape: tuple[int, int, int], padding_mode: str = "zeros") -> torch.Tensor:
    """Certified upper bound (float64) of the operator norm of :func:`conv_same` on ``in_shape``."""
    if padding_mode == "circular":
        return circular_conv_norm(kernel, in_shape)
    return conv_norm_bound(kernel, in_shape, 1, kernel.shape[-1] // 2)


@torch.no_grad()
def spectral_max_norm(matrices: torch.Tensor) -> float:
    """``max_ω ‖M(ω)‖₂`` (float64 SVD, ×(1 + CERT_SLACK)) of a batch of (complex) matrices ``(..., m, n)``."""
    m = matrices.detach()
    m = m.to(torch.complex128) if m.is_complex() else m.double()
    return float(torch.linalg.matrix_norm(m, 2).max()) * (1 + CERT_SLACK)


def fourier_apply(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""``Re F⁻¹ Q(ω) F x``: the circular convolution whose symbol at frequency ω is ``q[ω]``.

    ``x`` is ``(B, C_in, H, W)``, ``q`` is ``(H, W, C_out, C_in)`` complex; the FFT is unitary (``norm='ortho'``),
    so the map's norm is at most ``max_ω ‖q[ω]‖`` (taking the real part is a contraction), with equality when
    ``q`` is the symbol of a real kernel (``q[−ω] = conj q[ω]``, then the output is real)."""
    xf = torch.fft.fft2(x, norm="ortho").permute(2, 3, 1, 0)  # (H, W, C_in, B)
    yf = (q @ xf).permute(3, 2, 0, 1)  # (B, C_out, H, W)
    return torch.fft.ifft2(yf, norm="ortho").real


def kernel_symbol(kernel: torch.Tensor, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """The ``(H, W, C_out, C_in)`` Fourier symbol of a ``k×k`` kernel on the ``H×W`` torus (``H, W ≥ k``)."""
    _, h, w = in_shape
    return torch.fft.fft2(kernel, s=(h, w), norm="backward").permute(2, 3, 0, 1)
