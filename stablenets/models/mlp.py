"""Multi-layer perceptron: layers ``σ(Az + b)`` (eq. 1) or ``Bᵀσ(Az + b)`` (Section 4)."""

from __future__ import annotations

from ..checks import check_count
from ..nn.residual import MLPLayer
from .base import StackedNet


class MLP(StackedNet):
    """A multi-layer perceptron of ``depth`` layers ``σ(Az + b)`` (eq. 1) or ``Bᵀσ(Az + b)`` (Section 4).

    The flattened input is mapped to ``width`` by a linear lift (the identity when the sizes agree), then
    ``depth`` layers of dimension ``width`` and a linear head to ``out_dim``.  Unconstrained: no Lipschitz
    bound is claimed.

    Args:
        in_shape: the input's shape (no batch axis), from the data module.
        out_dim: the output dimension, from the data module.
        depth: the number of layers.
        width: the dimension of the layers' input and output.
        hidden: the rows of ``A`` (and ``B``) with ``form="two_matrix"``; ``None``: ``width``.  Not used with
            ``form="one_matrix"``.
        activation: ``σ``, an activation of :mod:`stablenets.nn.activations` (``"tanh"`` by default).
        form: ``"two_matrix"`` (default): ``Bᵀσ(Az + b)``; ``"one_matrix"``: ``σ(Az + b)``, ``A`` square.

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
        form: str = "two_matrix",
    ) -> None:
        check_count(depth=depth, width=width, hidden=hidden)
        layers = [MLPLayer(width, hidden or width, activation, form) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
