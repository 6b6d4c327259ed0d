r"""LOT — Layer-wise Orthogonal Training (Xu, Li, Li, NeurIPS 2022):

.. math::  Q = V (V^H V)^{-1/2}

has orthonormal columns for any full-column-rank ``V`` (``m < n``: ``(V Vᴴ)^{-1/2} V``, orthonormal rows).
The inverse square root is computed by the coupled Newton–Schulz iteration the paper uses: with
``S = VᴴV/c``, ``c = ‖VᴴV‖_F``, ``Y₀ = S``, ``Z₀ = I``,

.. math::  T_t = \tfrac12 (3I - Z_t Y_t), \qquad Y_{t+1} = Y_t T_t, \qquad Z_{t+1} = T_t Z_t
           \;\to\; Z_\infty = S^{-1/2},

so ``Q ≈ V Z_T/√c``.  On every eigenvalue ``λ ∈ (0, 1]`` of ``S`` the iteration is Newton's method for
``λ^{-1/2}`` from 1, ``z ← z(3 − λz²)/2``, which never overshoots (``z ≤ λ^{-1/2}``): the singular values of
``Q`` approach 1 from below.  ``train_iters`` / ``eval_iters`` iterations (the paper: 10).

* :class:`LOTLinear` — ``x ↦ Qx + b``;
* :class:`LOTConv2d` — a **circular** convolution on ``in_shape``, ``Q(ω) = V(ω)(V(ω)ᴴV(ω))^{-1/2}`` per
  frequency, ``V(ω)`` the symbol of a ``k×k`` kernel on the ``H×W`` torus, initialised to the identity.

Certified bound: ``max_ω ‖Q(ω)‖`` (float64 SVD) of the matrices the forward pass applies.
"""

from __future__ import annotations

import torch
from torch import nn

from ...checks import check_count
from ..power import dense_norm_bound
from .base import check_image_shape, check_input, check_kernel, fourier_apply, kernel_symbol, spectral_max_norm


def orthonormalize(v: torch.Tensor, iters: int) -> torch.Tensor:
    """``V (VᴴV)^{-1/2}`` (``m ≥ n``; else ``(VVᴴ)^{-1/2} V``) for a batch ``(..., m, n)`` by Newton–Schulz."""
    m, n = v.shape[-2:]
    if n > m:
        return orthonormalize(v.mH, iters).mH
    s = v.mH @ v
    c = torch.linalg.matrix_norm(s).clamp_min(1e-12)[..., None, None]  # Frobenius: the spectrum of S in (0, 1]
    y = s / c
    eye = torch.eye(n, dtype=v.dtype, device=v.device).expand_as(y)
    z = eye
    for _ in range(iters):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return v @ z / c.sqrt()


def _check_iters(train_iters: int, eval_iters: int) -> None:
    for name, value in (("train_iters", train_iters), ("eval_iters", eval_iters)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class LOTLinear(nn.Module):
    """Dense LOT ``in_features → out_features`` (default: square), initialised orthogonal."""

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        bias: bool = True,
        train_iters: int = 10,
        eval_iters: int = 20,
    ) -> None:
        super().__init__()
        check_count(in_features=in_features)
        check_count(out_features=out_features)
        _check_iters(train_iters, eval_iters)
        out_features = out_features or in_features
        self.in_features, self.out_features = in_features, out_features
        self.train_iters, self.eval_iters = train_iters, eval_iters
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def effective_weight(self, iters: int | None = None) -> torch.Tensor:
        iters = iters or (self.train_iters if self.training else self.eval_iters)
        return orthonormalize(self.weight, iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(dense_norm_bound(self.effective_weight(self.eval_iters)))


class LOTConv2d(nn.Module):
    """Circular ``k×k`` LOT convolution on inputs of shape ``in_shape`` (``H, W ≥ k``) to ``out_channels``."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        train_iters: int = 10,
        eval_iters: int = 20,
    ) -> None:
        super().__init__()
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, "circular", in_shape)
        check_count(out_channels=out_channels)
        _check_iters(train_iters, eval_iters)
        out_channels = out_channels or in_shape[0]
        self.in_shape, self.out_shape = in_shape, (out_channels, *in_shape[1:])
        self.train_iters, self.eval_iters = train_iters, eval_iters
        w = torch.empty(out_channels, in_shape[0], kernel_size, kernel_size)
        self.weight = nn.Parameter(nn.init.dirac_(w))  # identity init (as the paper's code)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def symbol(self, iters: int | None = None) -> torch.Tensor:
        iters = iters or (self.train_iters if self.training else self.eval_iters)
        return orthonormalize(kernel_symbol(self.weight, self.in_shape), iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "LOTConv2d")
        y = fourier_apply(x, self.symbol())
        return y if self.bias is None else y + self.bias[:, None, None]

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return spectral_max_norm(self.symbol(self.eval_iters))
