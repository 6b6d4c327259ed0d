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
  with ``Ŵ(ω)`` the ``C_out×C_in`` symbol of the centred ``k×k`` cross-correlation on the ``H×W`` torus
  (:func:`~.fourier.kernel_symbol`, half spectrum), the layer applies ``Q(ω) = cayley(α Ŵ(ω)/‖Ŵ‖_F)`` to the
  unitary FFT of the input (:mod:`.fourier`).

Operator and certified bound: ``Q`` (or ``Q(ω)``) as the forward pass applies it, ``max_ω ‖Q(ω)‖`` — 1 up to
rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LipschitzLayer, plain_linear
from .fourier import FourierLayer


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


class CayleyLinear(LipschitzLayer):
    """Dense Cayley layer.

    Args:
        in_features, out_features: sizes (``out_features`` defaults to ``in_features``).
        bias: learn an additive bias.

    Shape: ``(*, in_features) → (*, out_features)``.
    """

    operator_kind = "matrix"

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = self._dense(in_features, out_features)
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.alpha = nn.Parameter(self.weight.detach().norm().clone())

    def operator(self) -> torch.Tensor:
        return cayley(self.alpha * self.weight / self.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return nn.functional.linear(x, self.operator(), self.bias)

    def plain(self) -> nn.Module:
        return plain_linear(self.eval_operator(), self.bias)


class CayleyConv2d(FourierLayer):
    """Circular Cayley convolution, orthogonal for equal channels.

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int | None = None, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, "circular")
        self._fourier()
        conv = nn.Conv2d(in_shape[0], out_channels, kernel_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.alpha = nn.Parameter(self.spectrum_norm(self.kernel_symbol(self.weight.detach())).clone())

    def symbol(self) -> torch.Tensor:
        """``Q(ω)``: the Cayley transform of the normalised kernel symbol."""
        w = self.kernel_symbol(self.weight)
        return cayley(self.alpha * w / self.spectrum_norm(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        y = self.apply_symbol(x, self.symbol())
        return y if self.bias is None else y + self.bias[:, None, None]

    def plain(self) -> nn.Module:
        return self.plain_map(self.eval_operator(), self.bias)
