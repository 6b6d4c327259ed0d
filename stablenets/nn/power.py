r"""Spectral norms of linear operators: the power method of eq. (31) and certified upper bounds.

.. math::  u_{i+1} = \frac{A^\top A u_i}{\|A^\top A u_i\|_2}, \qquad
           \|A\|_2 \approx \sqrt{\|A^\top A u_k\|_2}

The power method approaches ``‖A‖₂`` from *below*; it is what training uses (cheap, warm-started).
Certificates use :func:`dense_norm_bound` (exact SVD) or :func:`conv_norm_bound`, an upper bound of the
zero-padded convolution's operator norm obtained exactly from the Fourier symbol of a circular
convolution on a domain large enough that no wrap-around occurs.  Both are computed in float64 and
returned in float64, enlarged by :data:`CERT_SLACK` to cover the float64 rounding of the SVD/FFT, so that
they are upper bounds of the operator defined by the stored (float32, bf16, ...) weights.  Where a bound
must be cast to a lower precision, :func:`round_up` rounds it up, never to nearest.

Both also add :func:`flush_slack`: with subnormals flushed to zero (``flush_denormal``, see
``stablenets.runner.numerics``) the arithmetic reads a subnormal weight entry as 0, so the operator the forward
pass applies may be the stored one with its subnormal entries zeroed.  The two differ in norm by at most the sum
of the zeroed entries' magnitudes, below ``numel · 2⁻¹²⁶``: with that added the bound holds for either
operator, whatever the flag was when the bound or the forward pass was computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Operator = Callable[[torch.Tensor], torch.Tensor]

#: relative enlargement of float64 SVD / FFT norms: their rounding error is ~1e-15 relative
CERT_SLACK = 1e-12


def flush_slack(weight: torch.Tensor) -> float:
    """``numel · tiny``: the most that flushing ``weight``'s subnormal entries to zero can change the norm of
    its dense map or of its convolution (each entry moves by less than ``tiny``; a convolution's norm is at
    most the sum of its kernel's magnitudes).  0 for dtypes whose subnormals the CPU does not flush (float16
    is computed in float32, where its subnormals are normal)."""
    if weight.dtype not in (torch.float32, torch.bfloat16, torch.float64):
        return 0.0
    return weight.numel() * torch.finfo(weight.dtype).tiny


def power_iteration(op: Operator, op_t: Operator, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of eq. (31) from the unit vector ``u``: ``(σ, u')`` with ``σ = √‖AᵀAu‖``.

    No host synchronisation: a zero ``AᵀAu`` (``u`` in the null space) keeps ``u`` and reports ``σ = 0``.
    """
    w = op_t(op(u))
    w_norm = w.norm()
    safe = w_norm > 1e-30
    u = torch.where(safe, w / w_norm.clamp_min(1e-30), u)
    return w_norm.sqrt(), u


@torch.no_grad()
def power_method(
    op: Operator,
    op_t: Operator,
    u: torch.Tensor,
    n_iters: int = 1,
    tol: float = 0.0,
    max_iters: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run eq. (31) from ``u``; return ``(sigma, u, iterations)``.

    At least ``n_iters`` iterations; then, while the relative change of the estimate exceeds ``tol``,
    keep iterating up to ``max_iters`` (so a warm start that has fallen behind catches up).  Checking the
    tolerance reads the estimate on the host: this is for initial and periodic convergence, not for the
    per-step update (see ``PowerMethodCallback``).
    """
    max_iters = max(n_iters, max_iters or n_iters)
    u = u / u.norm().clamp_min(1e-12)
    if float(op(u).norm()) == 0.0:  # a start in the null space: restart from noise
        u = torch.randn_like(u)
        u = u / u.norm()
    sigma = op(u).norm()
    it = 0
    while it < max_iters:
        new_sigma, u = power_iteration(op, op_t, u)
        it += 1
        change = float((new_sigma - sigma).abs() / new_sigma.clamp_min(1e-12))
        sigma = new_sigma
        if it >= n_iters and change <= tol:
            break
    return sigma, u, it


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def dense_ops(weight: torch.Tensor) -> tuple[Operator, Operator]:
    """``A u`` and ``Aᵀ v`` for a dense ``weight`` of shape (out, in) acting on vectors of shape (in,)."""
    return (lambda u: weight @ u), (lambda v: weight.t() @ v)


def conv_geometry(weight_shape, in_shape: tuple[int, int, int], stride=1, padding=0) -> dict[str, tuple[int, int]]:
    """Stride, padding and the ``output_padding`` that lands ``conv_transpose2d`` back on ``in_shape`` (H, W)."""
    (s_h, s_w), (p_h, p_w) = _pair(stride), _pair(padding)
    _, h, w = in_shape
    k_h, k_w = weight_shape[-2:]
    out_h, out_w = conv_output_size(h, k_h, s_h, p_h), conv_output_size(w, k_w, s_w, p_w)
    return {
        "stride": (s_h, s_w),
        "padding": (p_h, p_w),
        "output_padding": (h - ((out_h - 1) * s_h - 2 * p_h + k_h), w - ((out_w - 1) * s_w - 2 * p_w + k_w)),
    }


def conv_adjoint(
    v: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
) -> torch.Tensor:
    """The exact adjoint of ``conv2d(·, weight, stride, padding)`` applied to ``v`` (see :func:`conv_geometry`)."""
    k_h, k_w = weight.shape[-2:]
    if stride == (1, 1) and (2 * padding[0], 2 * padding[1]) == (k_h - 1, k_w - 1):
        # stride 1, "same" padding: the convolution with the flipped, transposed kernel (same padding) — the
        # same numbers as conv_transpose2d, through the faster forward-convolution kernels
        return F.conv2d(v, weight.transpose(0, 1).flip(-2, -1), padding=padding)
    return F.conv_transpose2d(v, weight, stride=stride, padding=padding, output_padding=output_padding)


def conv_ops(weight: torch.Tensor, in_shape: tuple[int, int, int], stride=1, padding=0) -> tuple[Operator, Operator]:
    """The convolution on inputs of shape ``in_shape`` = (C, H, W) and its exact adjoint."""
    g = conv_geometry(weight.shape, in_shape, stride, padding)

    def op(u: torch.Tensor) -> torch.Tensor:
        return F.conv2d(u, weight, stride=g["stride"], padding=g["padding"])

    def op_t(v: torch.Tensor) -> torch.Tensor:
        return conv_adjoint(v, weight, **g)

    return op, op_t


@torch.no_grad()
def dense_norm_bound(weight: torch.Tensor) -> torch.Tensor:
    """``‖W‖₂`` by SVD in float64 (exact up to :data:`CERT_SLACK`), as a float64 tensor."""
    return torch.linalg.matrix_norm(weight.detach().double(), 2) * (1 + CERT_SLACK) + flush_slack(weight)


@torch.no_grad()
def conv_norm_bound(weight: torch.Tensor, in_shape: tuple[int, int, int], stride=1, padding=0) -> torch.Tensor:
    """Certified upper bound (float64) of the operator norm of ``conv2d(·, weight, stride, padding)`` on ``in_shape``.

    The zero-padded convolution equals ``crop ∘ C ∘ embed`` with ``C`` a circular convolution on an
    ``M × M`` grid, ``M ≥ H + 2·padding + k`` large enough that no wrap-around occurs, and embed/crop of
    norm ≤ 1; a strided convolution is a subsampling (norm ≤ 1) of the stride-1 one.  ``‖C‖`` is exactly
    the largest singular value of the kernel's Fourier symbol over all frequencies.

    The kernel is real, so ``S(−ω) = conj(S(ω))`` has the same singular values: half the frequencies suffice
    (``rfft2``).  Each ``σ_max(S(ω))²`` is the top eigenvalue of the Gram matrix ``G = SSᴴ`` (or ``SᴴS``, the
    smaller one), which a Hermitian eigensolver computes several times faster than an SVD.  Forming ``G`` in
    float64 and the solver's backward error move that eigenvalue by less than ``4(n+2)·u·‖S(ω)‖_F²`` (``n``
    the inner dimension, ``u = 2⁻⁵³``; ``‖S‖_F² ≥ ‖G‖₂``), which is added before the square root.
    """
    (p_h, p_w) = _pair(padding)
    _, h, w = in_shape
    k_h, k_w = weight.shape[-2:]
    if (k_h, k_w) == (1, 1) and (p_h, p_w) == (0, 0):  # a 1×1 convolution is I ⊗ W: its norm is ‖W‖₂ exactly
        return dense_norm_bound(weight.flatten(1))
    symbol = torch.fft.rfft2(weight.detach().double(), s=(h + 2 * p_h + k_h, w + 2 * p_w + k_w))  # (out, in, M, M/2+1)
    symbol = symbol.permute(2, 3, 0, 1)
    out_c, in_c = symbol.shape[-2:]
    gram = symbol @ symbol.mH if out_c <= in_c else symbol.mH @ symbol
    top = torch.linalg.eigvalsh(gram)[..., -1]
    rounding = 4 * (max(out_c, in_c) + 2) * 2.0**-53 * symbol.abs().square().sum((-2, -1))
    bound = (top + rounding).max().clamp_min(0).sqrt()
    del stride  # subsampling only lowers the norm
    return bound * (1 + CERT_SLACK) + flush_slack(weight)


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
