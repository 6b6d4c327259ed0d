"""Dense ResNet: ``z + σ(Az + b)`` (eq. 2) or the explicit Euler step ``z + h Bᵀσ(Az + b)`` (Section 4)."""

from __future__ import annotations

from ..checks import check_count, check_positive
from ..nn.residual import ResidualLayer
from .base import StackedNet


class ResNet(StackedNet):
    def __init__(
        self,
        in_shape,
        out_dim: int,
        depth: int = 12,
        width: int = 4,
        hidden: int | None = None,
        activation: str = "tanh",
        h: float = 0.5,
        form: str = "two_matrix",
    ) -> None:
        check_count(depth=depth, width=width, hidden=hidden)
        check_positive(h=h)
        layers = [ResidualLayer(width, hidden or width, activation, h, form) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
