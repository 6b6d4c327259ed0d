r"""InvNet (Section 6.1): a Lipschitz-bounded reconstruction network for the 2-D inverse problem.

.. math::  \mathrm{InvNet}_L(y) = c \cdot \mathrm{project} \circ \Phi_\ell \circ \dots \circ \Phi_1 \circ \mathrm{lift}(y)

``lift`` pads with zeros (2 → ``width``), ``project`` keeps the first coordinates, ``Φ_i`` are
non-expansive blocks (eq. 18-19) and ``c`` is learnable, initialised to 1 and clamped to ``[−L, L]``:
the map is ``L``-Lipschitz.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import NonExpansiveBlock
from .base import check_architecture


class InvNet(nn.Module):
    def __init__(self, in_shape, out_dim: int, L: float, depth: int = 5, width: int = 10, hidden: int | None = None,
                 T: float = 1.0, activation: str = "relu", margin: float = 0.01) -> None:
        super().__init__()
        in_dim = math.prod(in_shape)
        check_architecture(depth, width, hidden=hidden, T=T, L=L)
        if width < max(in_dim, out_dim):
            raise ValueError(f"width must be >= input and output dimensions ({in_dim}, {out_dim}), got {width}")
        self.in_dim, self.out_dim, self.width, self.L = in_dim, out_dim, width, float(L)
        self.layers = nn.ModuleList(NonExpansiveBlock(width, hidden or width, T, activation, margin) for _ in range(depth))
        self.c = nn.Parameter(torch.ones(()))

    def scale(self) -> torch.Tensor:
        return self.c.clamp(-self.L, self.L)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = F.pad(y.flatten(1), (0, self.width - self.in_dim))  # lift: zero padding
        for layer in self.layers:
            z = layer(z)
        return self.scale() * z[:, : self.out_dim]  # project: first coordinates

    def lipschitz_bound(self) -> float:
        return float(self.scale().detach().abs())
