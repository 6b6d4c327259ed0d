"""Dense ResNet: ``z + σ(Az + b)`` (eq. 2) or the explicit Euler step ``z + h Bᵀσ(Az + b)`` (Section 4)."""

from __future__ import annotations

from ..checks import check_count, check_positive
from ..nn.residual import ResidualLayer
from .base import StackedNet


class ResNet(StackedNet):
    """A dense ResNet of ``depth`` layers ``z + σ(Az + b)`` (eq. 2) or ``z + h Bᵀσ(Az + b)`` (Section 4).

    The two-matrix layer is the explicit Euler step of size ``h`` of ``ż = Bᵀσ(Az + b)``.  The flattened input
    is mapped to ``width`` by a linear lift (the identity when the sizes agree), then ``depth`` residual
    layers and a linear head to ``out_dim``.  Unconstrained: no Lipschitz bound is claimed.

    Args:
        in_shape: the input's shape (no batch axis), from the data module.
        out_dim: the output dimension, from the data module.
        depth: the number of residual layers.
        width: the dimension of the residual stream ``z``.
        hidden: the rows of ``A`` (and ``B``) with ``form="two_matrix"``; ``None``: ``width``.  Not used with
            ``form="one_matrix"``.
        activation: ``σ``, an activation of :mod:`stablenets.nn.activations` (``"tanh"`` by default).
        h: the step size multiplying every residual branch (eq. 2 is ``form="one_matrix"`` with ``h = 1``).
        form: ``"two_matrix"`` (default): ``z + h Bᵀσ(Az + b)``; ``"one_matrix"``: ``z + h σ(Az + b)``, ``A``
            square.

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

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
