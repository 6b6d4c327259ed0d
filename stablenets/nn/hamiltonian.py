r"""Hamiltonian layers (Section 4): state ``x = (q, p) ∈ R^{2d}``, step size ``h``, activation ``σ = γ'``.

* :class:`HamiltonianEulerBlock` — explicit Euler step of a Hamiltonian field (eq. 26), *not* symplectic;
* :class:`SymplecticEulerBlock`  — the symplectic Euler step of eq. (28): ``∂ψᵀ J ∂ψ = J`` (eq. 23), hence
  ``‖∂ψ‖₂ ≥ 1`` (eq. 22) and no vanishing gradients through a stack of them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_positive
from .activations import get_activation


def symplectic_J(d2: int, dtype=None, device=None) -> torch.Tensor:
    """The canonical symplectic matrix ``J = [[0, I], [−I, 0]]`` of eq. (20)."""
    d = d2 // 2
    eye = torch.eye(d, dtype=dtype, device=device)
    zero = torch.zeros(d, d, dtype=dtype, device=device)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)


class _HamiltonianBlock(nn.Module):
    def __init__(self, dim: int, h: float, activation: str) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"a Hamiltonian block needs an even dimension, got {dim}")
        check_positive(h=h)
        self.sigma, _ = get_activation(activation)
        self.h = h


class HamiltonianEulerBlock(_HamiltonianBlock):
    r""".. math::  \Phi(x) = x + h J A^\top \sigma(Ax + a),  \qquad
    H(x) = \langle 1, \gamma(Ax + a)\rangle  \quad (26)"""

    def __init__(self, dim: int, h: float = 0.1, activation: str = "tanh") -> None:
        super().__init__(dim, h, activation)
        self.A = nn.Linear(dim, dim)
        self.register_buffer("J", symplectic_J(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.h * (self.sigma(self.A(x)) @ self.A.weight) @ self.J.t()


class SymplecticEulerBlock(_HamiltonianBlock):
    r"""Symplectic Euler for the separable Hamiltonian ``K(p) + U(q)`` (eq. 28), ``σ = tanh`` for ``γ = log cosh``:

    .. math::  \hat q = q + h B^\top\sigma(Bp + b), \qquad p' = p - h C^\top \sigma(C\hat q + c)
    """

    def __init__(self, dim: int, h: float = 0.1, activation: str = "tanh") -> None:
        super().__init__(dim, h, activation)
        d = dim // 2
        self.B = nn.Linear(d, d)
        self.C = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x.chunk(2, dim=-1)
        q = q + self.h * (self.sigma(self.B(p)) @ self.B.weight)
        p = p - self.h * (self.sigma(self.C(q)) @ self.C.weight)
        return torch.cat([q, p], dim=-1)
