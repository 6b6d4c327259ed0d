r"""Spectral norms of linear operators: the power method of eq. (31) and certified upper bounds.

.. math::  u_{i+1} = \frac{A^\top A u_i}{\|A^\top A u_i\|_2}, \qquad
           \|A\|_2 \approx \sqrt{\|A^\top A u_k\|_2}

The power method approaches ``‖A‖₂`` from *below*; it is what training uses (cheap, warm-started).
Certificates use :func:`dense_norm_bound` (exact SVD) or :func:`conv_norm_bound`, an upper bound of the
zero-padded convolution's operator norm obtained exactly from the Fourier symbol of a circular
convolution on a domain large enough that no wrap-around occurs.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Operator = Callable[[torch.Tensor], torch.Tensor]


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
    keep iterating up to ``max_iters`` (so a warm start that has fallen behind catches up).
    """
    max_iters = max(n_iters, max_iters or n_iters)
    u = u / u.norm().clamp_min(1e-12)
    sigma = op(u).norm()
    it = 0
    while it < max_iters:
        w = op_t(op(u))
        w_norm = w.norm()
        if w_norm <= 1e-30:  # A u = 0: restart from noise rather than dividing by zero
            u = torch.randn_like(u)
            u = u / u.norm()
            it += 1
            continue
        u = w / w_norm
        new_sigma = w_norm.sqrt()
        it += 1
        change = (new_sigma - sigma).abs() / new_sigma.clamp_min(1e-12)
        sigma = new_sigma
        if it >= n_iters and change <= tol:
            break
    return sigma, u, it


def dense_ops(weight: torch.Tensor) -> tuple[Operator, Operator]:
    """``A u`` and ``Aᵀ v`` for a dense ``weight`` of shape (out, in) acting on vectors of shape (in,)."""
    return (lambda u: weight @ u), (lambda v: weight.t() @ v)


def conv_ops(weight: torch.Tensor, in_shape: tuple[int, int, int], stride: int = 1, padding: int = 0) -> tuple[Operator, Operator]:
    """The convolution on inputs of shape ``in_shape`` = (C, H, W) and its exact adjoint."""
    _, h, w = in_shape
    k_h, k_w = weight.shape[-2:]
    out_h = (h + 2 * padding - k_h) // stride + 1
    out_w = (w + 2 * padding - k_w) // stride + 1
    # conv_transpose2d needs output_padding to land back on (H, W) when stride > 1
    op_h = h - ((out_h - 1) * stride - 2 * padding + k_h)
    op_w = w - ((out_w - 1) * stride - 2 * padding + k_w)

    def op(u: torch.Tensor) -> torch.Tensor:
        return F.conv2d(u, weight, stride=stride, padding=padding)

    def op_t(v: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(v, weight, stride=stride, padding=padding, output_padding=(op_h, op_w))

    return op, op_t


@torch.no_grad()
def dense_norm_bound(weight: torch.Tensor) -> torch.Tensor:
    """Exact ``‖W‖₂`` by SVD (in float64, so it is an upper bound to rounding)."""
    return torch.linalg.matrix_norm(weight.detach().double(), 2).to(weight.dtype)


@torch.no_grad()
def conv_norm_bound(weight: torch.Tensor, in_shape: tuple[int, int, int], stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Certified upper bound of the operator norm of ``conv2d(·, weight, stride, padding)`` on ``in_shape``.

    The zero-padded convolution equals ``crop ∘ C ∘ embed`` with ``C`` a circular convolution on an
    ``M × M`` grid, ``M ≥ H + 2·padding`` large enough that no wrap-around occurs, and embed/crop of
    norm ≤ 1; a strided convolution is a subsampling (norm ≤ 1) of the stride-1 one.  ``‖C‖`` is exactly
    the largest singular value of the kernel's Fourier symbol over all frequencies.
    """
    _, h, w = in_shape
    k_h, k_w = weight.shape[-2:]
    m_h, m_w = h + 2 * padding + k_h, w + 2 * padding + k_w
    symbol = torch.fft.fft2(weight.detach().double(), s=(m_h, m_w))  # (out, in, M, M)
    symbol = symbol.permute(2, 3, 0, 1)  # (M, M, out, in)
    bound = torch.linalg.matrix_norm(symbol, 2).max()
    del stride  # subsampling only lowers the norm
    return bound.to(weight.dtype)
