r"""Certified operator norms: the one place every certified bound of the project is computed.

Every certificate (a layer's ``lipschitz_bound()``, a certified norm in a normalised layer, the bound rules of
:mod:`stablenets.nn.bounds`) reduces to ``max σ_max`` over a batch of matrices — a dense weight (a batch of
one), the Fourier symbol of a convolution at each frequency, or a per-frequency map built in the Fourier domain —
and goes through :func:`max_singular_value_bound`, with one rounding rule:

* the matrices are taken in float64 (complex128), exactly as the forward pass's tensors hold them;
* ``σ_max(S)² = λ_max(G)`` with ``G = SSᴴ`` (or ``SᴴS``, the smaller), from a Hermitian eigensolver; forming
  ``G`` in float64 and the solver's backward error move ``λ_max`` by less than ``4(n+2)·u·‖S‖_F²`` (``n`` the
  larger dimension, ``u = 2⁻⁵³``; ``‖S‖_F² ≥ ‖G‖₂``), which is added before the square root;
* the result is enlarged by :data:`CERT_SLACK` (the float64 rounding of the FFT that produced a symbol, and of
  the square root) and by :func:`flush_slack` of the tensor the forward pass applies.

With subnormals flushed to zero (``flush_denormal``, see ``stablenets.runner.numerics``) the arithmetic reads a
subnormal entry as 0, so the operator the forward pass applies may be the stored one with its subnormal entries
zeroed.  The two differ in norm by at most the sum of the zeroed entries' magnitudes, below ``numel · tiny``:
with that added every bound holds for either operator, whatever the flag was when the bound or the forward pass
was computed.

Bounds are float64; where one must be cast to a lower precision, :func:`round_up` rounds it up (and
:func:`round_down` a scale factor down), never to nearest.
"""

from __future__ import annotations

import torch

#: relative enlargement of float64 norms: the rounding of an FFT (~1e-15 relative) and of the square root
CERT_SLACK = 1e-12


def flush_slack(tensor: torch.Tensor) -> float:
    """``numel · tiny``: the most that flushing ``tensor``'s subnormal entries to zero can change the norm of
    its dense map, its convolution (a convolution's norm is at most the sum of its kernel's magnitudes) or its
    per-frequency map.  0 for dtypes whose subnormals the CPU does not flush (float16 is computed in float32,
    where its subnormals are normal); complex tensors count their real and imaginary parts."""
    real = tensor.real if tensor.is_complex() else tensor
    if real.dtype not in (torch.float32, torch.bfloat16, torch.float64):
        return 0.0
    return tensor.numel() * (2 if tensor.is_complex() else 1) * torch.finfo(real.dtype).tiny


@torch.no_grad()
def max_singular_value_bound(matrices: torch.Tensor, applied: torch.Tensor | None = None) -> torch.Tensor:
    """Certified upper bound (float64 scalar tensor) of ``max σ_max`` over a batch of matrices ``(..., m, n)``
    (real or complex), by the rule of the module docstring; ``applied``: the tensor the forward pass applies
    (default ``matrices``), whose :func:`flush_slack` is added."""
    s = matrices.detach()
    s = s.to(torch.complex128) if s.is_complex() else s.double()
    m, n = s.shape[-2:]
    gram = s @ s.mH if m <= n else s.mH @ s
    try:
        top = torch.linalg.eigvalsh(gram)[..., -1]
    except torch.linalg.LinAlgError:  # LAPACK's eigensolver gave up (clustered spectra): the SVD's top value
        top = torch.linalg.svdvals(s)[..., 0].square()
    rounding = 4 * (max(m, n) + 2) * 2.0**-53 * s.abs().square().sum((-2, -1))
    bound = (top + rounding).max().clamp_min(0).sqrt()
    return bound * (1 + CERT_SLACK) + flush_slack(matrices if applied is None else applied)


def dense_norm_bound(weight: torch.Tensor) -> torch.Tensor:
    """``‖W‖₂`` of a dense ``weight`` (out, in), certified (float64 scalar tensor)."""
    return max_singular_value_bound(weight)


def symbol_norm_bound(symbol: torch.Tensor) -> torch.Tensor:
    """``max_ω ‖Q(ω)‖₂`` of a per-frequency map ``(..., C_out, C_in)`` (complex), certified: the norm of the real
    map ``Re F⁻¹ Q F`` — also with a half spectrum (``rfft2``/``irfft2``), whose other half is the conjugate."""
    return max_singular_value_bound(symbol)


def kernel_spectrum(kernel: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The ``(H, W//2 + 1, C_out, C_in)`` Fourier symbol of a ``k×k`` kernel on the ``H×W`` torus (float64 FFT;
    a real kernel's symbol at ``−ω`` is the conjugate, so half the frequencies carry every singular value)."""
    return torch.fft.rfft2(kernel.detach().double(), s=grid).permute(2, 3, 0, 1)


def circular_conv_norm_bound(kernel: torch.Tensor, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """Certified operator norm of the stride-1 circular convolution with ``kernel`` on ``in_shape`` (``H, W ≥ k``):
    exact up to rounding, the largest singular value of the kernel's symbol over the ``H×W`` frequencies (a
    shift of the kernel only changes phases)."""
    return max_singular_value_bound(kernel_spectrum(kernel, tuple(in_shape[1:])), kernel)


def conv_norm_bound(kernel: torch.Tensor, in_shape: tuple[int, int, int], stride=1, padding=0) -> torch.Tensor:
    """Certified upper bound of the operator norm of ``conv2d(·, kernel, stride, padding)`` (zero padding) on
    ``in_shape``.

    The zero-padded convolution equals ``crop ∘ C ∘ embed`` with ``C`` a circular convolution on an ``M × M`` grid,
    ``M ≥ H + 2·padding + k`` large enough that no wrap-around occurs, and embed/crop of norm ≤ 1; a strided
    convolution is a subsampling (norm ≤ 1) of the stride-1 one.  A 1×1 convolution without padding is
    ``I ⊗ W``: its norm is ``‖W‖₂`` exactly."""
    p_h, p_w = (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))
    _, h, w = in_shape
    k_h, k_w = kernel.shape[-2:]
    if (k_h, k_w) == (1, 1) and (p_h, p_w) == (0, 0):
        return dense_norm_bound(kernel.flatten(1))
    del stride  # subsampling only lowers the norm
    return max_singular_value_bound(kernel_spectrum(kernel, (h + 2 * p_h + k_h, w + 2 * p_w + k_w)), kernel)


def round_up(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` (float64) cast to ``dtype``, rounded up: the result is never below ``value``."""
    out = value.to(dtype)
    if dtype == torch.float64:
        return out
    below = out.double() < value
    return torch.where(below, torch.nextafter(out, torch.full_like(out, float("inf"))), out)


def round_down(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` (float64) cast to ``dtype``, rounded down: the result is never above ``value``."""
    out = value.to(dtype)
    if dtype == torch.float64:
        return out
    above = out.double() > value
    return torch.where(above, torch.nextafter(out, torch.full_like(out, float("-inf"))), out)
