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
SVD of the matrix the forward pass applies (1 up to rounding).

:class:`SandwichConv2d` is the paper's convolutional form: the same layer with ``A``, ``B`` circular
convolutions on ``in_shape``, ``[A(ω) B(ω)] = cayley(α Ŵ(ω)/‖Ŵ‖_F)`` per frequency (``Ŵ`` the symbol of a
``k×k`` kernel from ``in + out`` to ``out`` channels), each applied as ``Re F⁻¹ M(ω) F``.  The adjoint of
``Re F⁻¹ M F`` (real inner product) is ``Re F⁻¹ Mᴴ F``, so the layer is exactly ``2𝒜ᵀσ(ℬx + c)`` with the real
operators ``𝒜 = Re F⁻¹AF``, ``ℬ = Re F⁻¹BF``, and the bound above applies: ``Lip ≤ ‖[𝒜 ℬ]‖² ≤
max_ω ‖[A(ω) B(ω)]‖²`` (taking the real part is a contraction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..power import dense_norm_bound
from .base import check_input, circular_conv_shapes, dense_features, fourier_apply, kernel_symbol, spectral_max_norm
from .cayley import cayley


class SandwichLinear(nn.Module):
    """Dense sandwich layer ``in_features → out_features`` (default: square), ReLU inside."""

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = dense_features(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        lin = nn.Linear(in_features + out_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.alpha = nn.Parameter(self.weight.detach().norm().clone())
        self.psi = nn.Parameter(torch.zeros(out_features))

    def orthogonal(self) -> torch.Tensor:
        """``[A B]``: ``out × (out + in)`` with orthonormal rows."""
        return cayley(self.alpha * self.weight / self.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.orthogonal()
        a, b = q[:, : self.out_features], q[:, self.out_features :]
        shift = None if self.bias is None else self.bias * torch.exp(self.psi) / math.sqrt(2)
        return 2 * (F.relu(F.linear(x, b, shift)) @ a)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(dense_norm_bound(self.orthogonal())) ** 2


class SandwichConv2d(nn.Module):
    """Circular ``k×k`` sandwich convolution on inputs of shape ``in_shape`` (``H, W ≥ k``) to ``out_channels``
    (default: the input's), ReLU inside."""

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int | None = None, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_shape, self.out_shape = circular_conv_shapes(in_shape, out_channels, kernel_size)
        in_shape, out_channels = self.in_shape, self.out_shape[0]
        conv = nn.Conv2d(in_shape[0] + out_channels, out_channels, kernel_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.alpha = nn.Parameter(kernel_symbol(self.weight.detach(), in_shape).norm().clone())
        self.psi = nn.Parameter(torch.zeros(out_channels))

    def symbol(self) -> torch.Tensor:
        """``[A(ω) B(ω)]``, ``(H, W, out, out + in)`` complex, orthonormal rows."""
        w = kernel_symbol(self.weight, self.in_shape)
        return cayley(self.alpha * w / w.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "SandwichConv2d")
        q = self.symbol()
        out = self.out_shape[0]
        z = fourier_apply(x, q[..., out:])
        if self.bias is not None:
            z = z + (self.bias * torch.exp(self.psi) / math.sqrt(2))[:, None, None]
        return 2 * fourier_apply(F.relu(z), q[..., :out].mH)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return spectral_max_norm(self.symbol()) ** 2
