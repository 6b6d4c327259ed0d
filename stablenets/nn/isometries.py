"""Maps that change the shape of a signal without changing its norm budget (Lipschitz exactly 1).

* :class:`ChannelPad` — lifts ``C`` channels to ``C' ≥ C`` by zero padding: an isometry;
* :class:`SpatialPad` — zero padding of the image borders (``28×28 → 32×32``): an isometry;
* :class:`FirstChannels` — keeps the first ``k`` channels: a coordinate projection, so 1-Lipschitz;
* :class:`Translate` — subtracts a fixed per-channel offset (input centring): an isometry;
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
        return (F.avg_pool2d(x * x, self.k) * self.k**2 + self.eps).sqrt()

    def lipschitz_bound(self) -> float:
        return 1.0


class SpatialPad(nn.Module):
    """Zero padding of ``H×W`` to ``(H + top + bottom)×(W + left + right)``: adds zeros, so it preserves
    distances exactly (Lipschitz 1)."""

    def __init__(self, top: int, bottom: int, left: int, right: int) -> None:
        super().__init__()
        if min(top, bottom, left, right) < 0:
            raise ValueError(f"SpatialPad pads: amounts must be >= 0, got {(top, bottom, left, right)}")
        self.pad = (int(left), int(right), int(top), int(bottom))

    @classmethod
    def to_multiple(cls, shape: tuple[int, ...], multiple: int) -> SpatialPad:
        """Pads ``(C, H, W)`` as evenly as possible on both sides up to the next multiple of ``multiple``."""
        extra_h, extra_w = (-shape[1]) % multiple, (-shape[2]) % multiple
        return cls(extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        left, right, top, bottom = self.pad
        return (shape[0], shape[1] + top + bottom, shape[2] + left + right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad)

    def lipschitz_bound(self) -> float:
        return 1.0


class FirstChannels(nn.Module):
    """``x ↦ x[:, :k]``: drops all channels (or features) after the first ``k``; a projection, Lipschitz 1."""

    def __init__(self, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"FirstChannels keeps k >= 1 channels, got {k}")
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < self.k:
            raise ValueError(f"FirstChannels({self.k}) got only {x.shape[1]} channels")
        return x[:, : self.k]

    def lipschitz_bound(self) -> float:
        return 1.0


class Translate(nn.Module):
    """``x ↦ x − offset`` with a fixed per-channel ``offset`` (centring the input): an isometry."""

    def __init__(self, offset: list[float] | tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("offset", torch.as_tensor(list(offset), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.offset.shape[1]:
            raise ValueError(f"Translate has {self.offset.shape[1]} channel offsets, got {x.shape[1]} channels")
        return x - self.offset.to(x.dtype)

    def lipschitz_bound(self) -> float:
        return 1.0
