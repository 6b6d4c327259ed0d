"""Hamiltonian neural network (Section 4): a stack of symplectic Euler steps (eq. 28) or explicit Euler
steps of a Hamiltonian field (eq. 26, ``integrator='euler'``), between a lift and a linear head."""

from __future__ import annotations

from ..checks import check_count, check_positive
from ..nn.hamiltonian import HamiltonianEulerBlock, SymplecticEulerBlock
from .base import StackedNet

INTEGRATORS = {"symplectic": SymplecticEulerBlock, "euler": HamiltonianEulerBlock}


class HNN(StackedNet):
    """A Hamiltonian neural network (Section 4): ``depth`` Hamiltonian steps between a linear lift and head.

    The state ``x = (q, p)`` of dimension ``width`` is updated by symplectic Euler steps of a separable
    Hamiltonian (eq. 28: ``‖∂ψ‖₂ ≥ 1``, no vanishing gradients) or by explicit Euler steps of a Hamiltonian
    field (eq. 26, not symplectic).  The flattened input is mapped to ``width`` by a linear lift (the
    identity when the sizes agree) and the last state by a linear head to ``out_dim``.

    Args:
        in_shape: the input's shape (no batch axis), from the data module.
        out_dim: the output dimension, from the data module.
        depth: the number of Hamiltonian steps.
        width: the dimension ``2d`` of the state ``(q, p)`` (even).
        h: the step size of every step.
        activation: ``σ = γ'``, an activation of :mod:`stablenets.nn.activations` (``"tanh"`` by default,
            ``γ = log cosh``).
        integrator: ``"symplectic"`` (default, eq. 28) or ``"euler"`` (explicit Euler, eq. 26).

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

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
