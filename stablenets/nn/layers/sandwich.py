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
SVD of the matrix the forward pass applies (1 up to rounding).  Dense only: the comparison dropped the
convolutional version (its first-layer gradient vanished), and its Fourier form needs more care.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..power import dense_norm_bound
from .base import check_channels
from .cayley import cayley


class SandwichLinear(nn.Module):
    """Dense sandwich layer ``in_features → out_features`` (default: square), ReLU inside."""

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        check_channels("in_features", in_features)
        check_channels("out_features", out_features)
        out_features = out_features or in_features
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
        a, b = q[:, : self.out_features], q[:, self.out_features:]
        shift = None if self.bias is None else self.bias * torch.exp(self.psi) / math.sqrt(2)
        return 2 * (F.relu(F.linear(x, b, shift)) @ a)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(dense_norm_bound(self.orthogonal())) ** 2
