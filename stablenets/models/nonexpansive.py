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
