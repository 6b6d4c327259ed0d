"""Dense non-expansive network: lift, ``depth`` gradient-flow blocks (eq. 18-19), head.

The blocks are 1-Lipschitz; the lift is divided by ``max(1, ‖W‖)`` (``constrain_lift``) and the head is
free — its exact norm enters ``lipschitz_bound`` — unless ``constrain_head``.  With a prescribed ``L``
(``lipschitz=bound lipschitz.L=...``) both are constrained and the output is scaled by ``L``: the whole
net is then ``L``-Lipschitz.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.blocks import NonExpansiveBlock, NormalizedLinear
from .base import StackedNet, check_architecture


class NonExpansiveNet(StackedNet):
    def __init__(self, in_shape, out_dim: int, depth: int = 4, width: int = 16, hidden: int | None = None,
                 T: float = 1.0, activation: str = "relu", margin: float = 0.01,
                 constrain_lift: bool = True, constrain_head: bool = False, L: float | None = None) -> None:
        check_architecture(depth, width, hidden=hidden, T=T, L=L)
        layers = [NonExpansiveBlock(width, hidden or width, T, activation, margin) for _ in range(depth)]
        super().__init__(in_shape, width, layers, out_dim)
        self.L = L
        if (constrain_lift or L is not None) and not isinstance(self.lift, nn.Identity):
            self.lift = NormalizedLinear(math.prod(in_shape), width)
        if constrain_head or L is not None:
            self.head = NormalizedLinear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.L is None else self.L * out

    def lipschitz_bound(self) -> float:
        return super().lipschitz_bound() * (1.0 if self.L is None else self.L)
