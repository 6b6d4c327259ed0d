"""Dense non-expansive network: lift, ``depth`` gradient-flow blocks (eq. 18-19), head.

The blocks are 1-Lipschitz; the lift is capped at norm 1 (``constrain_lift``) and the head is free — its
exact norm enters :meth:`lipschitz_bound` — unless ``constrain_head``.  With a prescribed ``L``
(``lipschitz=bound lipschitz.L=...``) lift and head are normalised to norm exactly 1 and the output is
scaled by ``L``: the whole net is ``L``-Lipschitz and reports exactly ``L``.
"""

from __future__ import annotations

import math

from torch import nn

from ..checks import check_count, check_positive
from ..nn.bounds import lipschitz_bound
from ..nn.gradient_flow import NonExpansiveBlock
from ..nn.spectral import SpectralLinear
from .base import StackedNet


class NonExpansiveNet(StackedNet):
    """A dense non-expansive network: a lift, ``depth`` gradient-flow blocks (eq. 18-19) and a linear head.

    Each block ``x ↦ x − h Aᵀσ(Ax + b)`` is 1-Lipschitz; the lift and the head are norm-constrained or free,
    and :meth:`lipschitz_bound` is the product of the parts' certified bounds (see the module docstring).

    Args:
        in_shape: the input's shape (no batch axis), from the data module; the input is flattened.
        out_dim: the output dimension, from the data module.
        depth: the number of gradient-flow blocks.
        width: the dimension the blocks work in; the flattened input is lifted to it (no lift when the sizes
            agree).
        hidden: the rows of each block's ``A``; ``None``: ``width``.
        T: the flow time of each block; it takes ``n = ⌈T k (1 + margin) ‖A‖² / 2⌉`` Euler sub-steps of
            ``h = T/n`` (eq. 19, ``k`` the activation's Lipschitz constant).
        activation: the blocks' ``σ``, a non-decreasing activation of :mod:`stablenets.nn.activations`
            (``"relu"`` by default).
        margin: the relative safety margin of the training step-size rule (eq. 19).
        constrain_lift: cap the lift's norm at 1 (default ``True``); ``False``: a free linear lift whose norm
            enters the bound.
        constrain_head: cap the head's norm at 1; ``False`` (default): a free head whose exact norm enters the
            bound.
        L: a prescribed Lipschitz bound (``lipschitz.L``): the lift and head are normalised to norm exactly 1
            and the output is scaled by ``L``, so the net is ``L``-Lipschitz; ``None``: no scaling.

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        depth: int = 4,
        width: int = 16,
        hidden: int | None = None,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        constrain_lift: bool = True,
        constrain_head: bool = False,
        L: float | None = None,
    ) -> None:
        check_count(depth=depth, width=width, hidden=hidden)
        check_positive(T=T, L=L)
        layers = [NonExpansiveBlock(width, hidden or width, T, activation, margin) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
        self.in_shape, self.L = tuple(in_shape), L
        exact = L is not None
        if (constrain_lift or exact) and not isinstance(self.lift, nn.Identity):
            self.lift = SpectralLinear(math.prod(in_shape), width, max_norm=1.0, exact=exact)
        if constrain_head or exact:
            self.head = SpectralLinear(width, out_dim, max_norm=1.0, exact=exact)

    def forward(self, x):
        out = super().forward(x)
        return out if self.L is None else self.L * out

    def lipschitz_bound(self) -> float:
        bound = lipschitz_bound([nn.Flatten(), self.lift, *self.layers, self.head], self.in_shape)
        return bound if self.L is None else bound * self.L
