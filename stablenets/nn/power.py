r"""The power method of eq. (31), and convolutions as operators (the map and its exact adjoint).

.. math::  u_{i+1} = \frac{A^\top A u_i}{\|A^\top A u_i\|_2}, \qquad
           \|A\|_2 \approx \sqrt{\|A^\top A u_k\|_2}

The power method approaches ``‖A‖₂`` from *below*; it is what training uses (cheap, warm-started).  It certifies
nothing: certified norms are computed in :mod:`stablenets.nn.norms`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Operator = Callable[[torch.Tensor], torch.Tensor]


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
