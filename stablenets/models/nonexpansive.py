"""Dense non-expansive network: lift, ``depth`` gradient-flow blocks (eq. 18-19), head.

The blocks are 1-Lipschitz; the lift and head are free (their exact norms enter ``lipschitz_bound``)
unless ``constrain_lift`` / ``constrain_head`` divide them by ``max(1, ‖W‖)``.
"""
from __future__ import annotations

import math

from torch import nn

from ..nn.blocks import NonExpansiveBlock, NormalizedLinear
from .base import StackedNet, check_architecture


class NonExpansiveNet(StackedNet):
    def __init__(self, in_shape, out_dim: int, depth: int = 4, width: int = 16, hidden: int | None = None,
                 T: float = 1.0, activation: str = "relu", margin: float = 0.01,
                 constrain_lift: bool = True, constrain_head: bool = False) -> None:
        check_architecture(depth, width, hidden=hidden, T=T)
        layers = [NonExpansiveBlock(width, hidden or width, T, activation, margin) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
        if constrain_lift and not isinstance(self.lift, nn.Identity):
            self.lift = NormalizedLinear(math.prod(in_shape), width)
        if constrain_head:
            self.head = NormalizedLinear(width, out_dim)
