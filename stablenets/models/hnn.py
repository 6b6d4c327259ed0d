"""Hamiltonian neural network (Section 4): a stack of symplectic Euler steps (eq. 28) or explicit Euler
steps of a Hamiltonian field (eq. 26, ``integrator='euler'``), between a lift and a linear head."""

from __future__ import annotations

from ..checks import check_count, check_positive
from ..nn.hamiltonian import HamiltonianEulerBlock, SymplecticEulerBlock
from .base import StackedNet

INTEGRATORS = {"symplectic": SymplecticEulerBlock, "euler": HamiltonianEulerBlock}


class HNN(StackedNet):
    def __init__(
        self,
        in_shape,
        out_dim: int,
        depth: int = 12,
        width: int = 4,
        h: float = 0.5,
        activation: str = "tanh",
        integrator: str = "symplectic",
    ) -> None:
        check_count(depth=depth, width=width)
        check_positive(h=h)
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {sorted(INTEGRATORS)}, got {integrator!r}")
        if width % 2:
            raise ValueError(f"width must be even (x = (q, p)), got {width}")
        layers = [INTEGRATORS[integrator](width, h, activation) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
