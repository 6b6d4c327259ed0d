"""Multi-layer perceptron: layers ``σ(Az + b)`` (eq. 1) or ``Bᵀσ(Az + b)`` (Section 4)."""

from __future__ import annotations

from ..checks import check_count
from ..nn.residual import MLPLayer
from .base import StackedNet


class MLP(StackedNet):
    def __init__(
        self,
        in_shape,
        out_dim: int,
        depth: int = 12,
        width: int = 4,
        hidden: int | None = None,
        activation: str = "tanh",
        form: str = "two_matrix",
    ) -> None:
        check_count(depth=depth, width=width, hidden=hidden)
        layers = [MLPLayer(width, hidden or width, activation, form) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
