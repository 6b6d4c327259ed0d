"""Maps that change the shape of a signal without changing its norm budget (Lipschitz exactly 1).

* :class:`ChannelPad` — lifts ``C`` channels to ``C' ≥ C`` by zero padding: an isometry;
* :class:`L2Pool2d`  — ``√(Σ x²)`` over disjoint ``k×k`` windows (deel-lip's scaled L2-norm pooling): each
  output is the norm of its own sub-vector, so the map is 1-Lipschitz, and exactly so for perturbations
  along ``x`` within a window.  Downsampling that keeps the bound at 1 where an average pool costs ``1/k``.

``nn.PixelUnshuffle`` (an invertible permutation, ``C×H×W → Ck²×H/k×W/k``) needs no class of its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelPad(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ChannelPad lifts: out_channels ({out_channels}) must be >= in_channels ({in_channels})")
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def lipschitz_bound(self) -> float:
        return 1.0


class L2Pool2d(nn.Module):
    def __init__(self, kernel_size: int = 2, eps: float = 1e-12) -> None:
        super().__init__()
        self.k, self.eps = kernel_size, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the sum of squares of each window, k² times its average; eps keeps the gradient finite at 0
        return (F.avg_pool2d(x * x, self.k) * self.k ** 2 + self.eps).sqrt()

    def lipschitz_bound(self) -> float:
        return 1.0
