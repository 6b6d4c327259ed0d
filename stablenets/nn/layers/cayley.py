r"""Cayley — orthogonal layers by the Cayley transform (Trockman & Kolter, "Orthogonalizing
Convolutional Layers with the Cayley Transform", ICLR 2021).

.. math::  Q = (I - A)(I + A)^{-1}, \qquad A = -A^H \quad\Rightarrow\quad Q^H Q = I

For a rectangular ``W ∈ C^{m×n}`` (``m ≥ n``) with ``U`` its first ``n`` rows and ``V`` the rest, the
transform of the skew-Hermitian ``[[U − Uᴴ, −Vᴴ], [V, 0]]`` restricted to its first ``n`` columns is

.. math::  Q = \begin{bmatrix} I - A \\ -2V \end{bmatrix} (I + A)^{-1}, \qquad A = U - U^H + V^H V,

whose columns are orthonormal (``m < n``: the transform of ``Wᴴ``, transposed back: orthonormal rows).
The parameter is ``α W/‖W‖_F`` with a learned scale ``α`` initialised to ``‖W‖_F`` (as in the paper's code).

* :class:`CayleyLinear` — ``x ↦ Qx + b``;
* :class:`CayleyConv2d` — a **circular** convolution on ``in_shape``, orthogonal frequency by frequency:
  with ``Ŵ(ω)`` the ``C_out×C_in`` symbol of a ``k×k`` kernel on the ``H×W`` torus, the layer applies
  ``Q(ω) = cayley(α Ŵ(ω)/‖Ŵ‖_F)`` to the unitary FFT of the input and returns the real part of the inverse
  FFT (``Ŵ(−ω) = conj Ŵ(ω)``, so ``Q`` has the same symmetry and the output is real in exact arithmetic).

Certified bound: ``max_ω ‖Q(ω)‖`` (float64 SVD) of the matrices the forward pass applies — 1 up to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..power import dense_norm_bound
from .base import check_input, circular_conv_shapes, dense_features, fourier_apply, kernel_symbol, spectral_max_norm


def cayley(w: torch.Tensor) -> torch.Tensor:
    """The (generalised) Cayley transform of a batch of matrices ``(..., m, n)``: orthonormal columns when
    ``m ≥ n``, orthonormal rows otherwise (see the module docstring)."""
    m, n = w.shape[-2:]
    if n > m:
        return cayley(w.mH).mH
    u, v = w[..., :n, :], w[..., n:, :]
    eye = torch.eye(n, dtype=w.dtype, device=w.device)
    a = u - u.mH + v.mH @ v
    return torch.linalg.solve(eye + a, torch.cat([eye - a, -2 * v], dim=-2), left=False)


class CayleyLinear(nn.Module):
    """Dense Cayley layer ``in_features → out_features`` (default: square)."""

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = dense_features(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.alpha = nn.Parameter(self.weight.detach().norm().clone())

    def effective_weight(self) -> torch.Tensor:
        return cayley(self.alpha * self.weight / self.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(dense_norm_bound(self.effective_weight()))


class CayleyConv2d(nn.Module):
    """Circular ``k×k`` Cayley convolution on inputs of shape ``in_shape`` (``H, W ≥ k``) to ``out_channels``."""

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int | None = None, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_shape, self.out_shape = circular_conv_shapes(in_shape, out_channels, kernel_size)
        in_shape, out_channels = self.in_shape, self.out_shape[0]
        conv = nn.Conv2d(in_shape[0], out_channels, kernel_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.alpha = nn.Parameter(kernel_symbol(self.weight.detach(), in_shape).norm().clone())

    def symbol(self) -> torch.Tensor:
        """``Q(ω)``, ``(H, W, C_out, C_in)`` complex: the Cayley transform of the normalised kernel symbol."""
        w = kernel_symbol(self.weight, self.in_shape)
        return cayley(self.alpha * w / w.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "CayleyConv2d")
        y = fourier_apply(x, self.symbol())
        return y if self.bias is None else y + self.bias[:, None, None]

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return spectral_max_norm(self.symbol())
