r"""Sandwich — the 1-Lipschitz sandwich layer (Wang & Manchester, "Direct Parameterization of
Lipschitz-Bounded Deep Networks", ICML 2023):

.. math::  x \mapsto \sqrt2 A^\top \Psi \,\sigma\big(\sqrt2\, \Psi^{-1} B x + b\big), \qquad
           [\,A \;\; B\,] = \mathrm{cayley}(\alpha W/\|W\|_F), \quad \Psi = \mathrm{diag}(e^{\psi})

with ``A ∈ R^{m×m}``, ``B ∈ R^{m×n}`` and ``[A B]`` having orthonormal rows (the Cayley transform of
:mod:`.cayley` of an ``m×(m+n)`` parameter).  σ is ReLU, positively homogeneous, so the layer equals
``2 Aᵀ σ(Bx + Ψb/√2)`` — the form computed here (numerically stable: ``Ψ`` and ``Ψ⁻¹`` never multiply
back to an inexact 1; this is the reference code's ``stable_forward``).

Certified bound (computed, not assumed): ``f(x) − f(y) = 2AᵀJB(x − y)`` with ``J`` diagonal in ``[0, 1]``.
For ``w = JBΔ`` one has ``‖w‖² ≤ wᵀBΔ``, and with ``λ = ‖[A B]‖² = λ_max(AAᵀ + BBᵀ)``,
``‖2Aᵀw‖² ≤ 4(λ‖w‖² − ‖Bᵀw‖²) ≤ 4λ⟨Bᵀw, Δ⟩ − 4‖Bᵀw‖² ≤ λ²‖Δ‖²``.  So ``Lip ≤ ‖[A B]‖₂²``, from the float64
matrix the forward pass applies (1 up to rounding): ``[A B]`` is the layer's operator.

:class:`SandwichConv2d` is the paper's convolutional form: the same layer with ``A``, ``B`` circular
convolutions on ``in_shape``, ``[A(ω) B(ω)] = cayley(α Ŵ(ω)/‖Ŵ‖_F)`` per frequency (``Ŵ`` the symbol of a
centred ``k×k`` kernel from ``in + out`` to ``out`` channels, :mod:`.fourier`), each applied as ``Re F⁻¹ M(ω) F``.
The adjoint of
``Re F⁻¹ M F`` (real inner product) is ``Re F⁻¹ Mᴴ F``, so the layer is exactly ``2𝒜ᵀσ(ℬx + c)`` with the real
operators ``𝒜 = Re F⁻¹AF``, ``ℬ = Re F⁻¹BF``, and the bound above applies: ``Lip ≤ ‖[𝒜 ℬ]‖² ≤
max_ω ‖[A(ω) B(ω)]‖²`` (taking the real part is a contraction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LipschitzLayer, plain_linear
from .cayley import cayley
from .fourier import FourierLayer


class _Sandwich(LipschitzLayer):
    def bound_from_norm(self, norm: float) -> float:
        return norm**2

    def _shift(self) -> torch.Tensor | None:
        """``Ψb/√2``: the bias inside the ReLU of the stable form."""
        return None if self.bias is None else self.bias * torch.exp(self.psi) / math.sqrt(2)


class SandwichLinear(_Sandwich):
    """Dense sandwich layer, ReLU inside.

    Args:
        in_features, out_features: sizes (``out_features`` defaults to ``in_features``).
        bias: an additive bias, inside the ReLU.

    Shape: ``(*, in_features) → (*, out_features)``.
    """

    operator_kind = "matrix"

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = self._dense(in_features, out_features)
        lin = nn.Linear(in_features + out_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.alpha = nn.Parameter(self.weight.detach().norm().clone())
        self.psi = nn.Parameter(torch.zeros(out_features))

    def operator(self) -> torch.Tensor:
        """``[A B]``: ``out × (out + in)`` with orthonormal rows."""
        return cayley(self.alpha * self.weight / self.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        q = self.operator()
        a, b = q[:, : self.out_features], q[:, self.out_features :]
        return 2 * (F.relu(F.linear(x, b, self._shift())) @ a)

    @torch.no_grad()
    def plain(self) -> nn.Module:
        q, out = self.eval_operator(), self.out_features
        return nn.Sequential(plain_linear(q[:, out:], self._shift()), nn.ReLU(), plain_linear(2 * q[:, :out].t(), None))


class SandwichConv2d(_Sandwich, FourierLayer):
    """Circular sandwich convolution, ReLU inside.

    Args:
        in_shape, out_channels, kernel_size: as for every convolutional family (:class:`.base.LipschitzLayer`).
        bias: an additive bias, inside the ReLU.

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int | None = None, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, "circular")
        self._fourier()
        conv = nn.Conv2d(in_shape[0] + out_channels, out_channels, kernel_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.alpha = nn.Parameter(self.spectrum_norm(self.kernel_symbol(self.weight.detach())).clone())
        self.psi = nn.Parameter(torch.zeros(out_channels))

    def symbol(self) -> torch.Tensor:
        """``[A(ω) B(ω)]``, ``(H, W//2 + 1, out, out + in)`` complex, orthonormal rows."""
        w = self.kernel_symbol(self.weight)
        return cayley(self.alpha * w / self.spectrum_norm(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        q, out = self.symbol(), self.out_shape[0]
        z = self.apply_symbol(x, q[..., out:])
        shift = self._shift()
        if shift is not None:
            z = z + shift[:, None, None]
        return 2 * self.apply_symbol(F.relu(z), q[..., :out].mH)

    @torch.no_grad()
    def plain(self) -> nn.Module:
        q, out = self.eval_operator(), self.out_shape[0]
        return nn.Sequential(
            self.plain_map(q[..., out:], self._shift()), nn.ReLU(), self.plain_map(2 * q[..., :out].mH)
        )
