"""Two-class Swiss roll (Figures 2 and 4), embedded in R⁴ as ``(x1, x2) ↦ (x1, 0, x2, 0)`` (Section 4).

Class 0 lies on the spiral ``r(t) = t (cos t, sin t)``, class 1 on the same spiral rotated by π;
``t`` is uniform on ``[t_min, t_max]`` and Gaussian noise of std ``noise`` is added.  Coordinates are
divided by ``t_max`` so the roll fits in the unit disc.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_count
from .base import TensorDataModule


def swiss_roll(
    n: int, generator: torch.Generator, noise: float = 0.01, turns: float = 1.25, t_min: float = 0.5 * math.pi
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in R² and labels in {0, 1}."""
    t_max = t_min + 2 * math.pi * turns
    labels = torch.randint(0, 2, (n,), generator=generator)
    t = t_min + (t_max - t_min) * torch.rand(n, generator=generator).sqrt()  # uniform along the arc length
    angle = t + math.pi * labels
    pts = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1) / t_max
    return pts + noise * torch.randn(n, 2, generator=generator), labels


def embed(points: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) ↦ (x1, 0, x2, 0)``: ``q = (x1, 0)``, ``p = (x2, 0)`` for the Hamiltonian nets."""
    zeros = torch.zeros_like(points[:, :1])
    return torch.cat([points[:, :1], zeros, points[:, 1:], zeros], 1)


class SwissRollDataModule(TensorDataModule):
    out_dim = 2

    def __init__(
        self,
        n_train: int = 1000,
        n_val: int = 500,
        n_test: int = 1000,
        noise: float = 0.01,
        turns: float = 1.25,
        embed_dim: int = 4,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_count(n_train=n_train, n_val=n_val, n_test=n_test)
        if embed_dim not in (2, 4):
            raise ValueError(f"embed_dim must be 2 or 4, got {embed_dim}")
        self.sizes = (n_train, n_val, n_test)
        self.noise, self.turns, self.embed_dim = noise, turns, embed_dim
        self.in_shape = (embed_dim,)

    def build(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        sets = []
        for n in self.sizes:
            x, y = swiss_roll(n, g, self.noise, self.turns)
            sets.append(self.tensors(embed(x) if self.embed_dim == 4 else x, y))
        self.train_set, self.val_set, self.test_set = sets

    def figures(self, net, out_dir, title: str = "") -> None:
        """Decision boundary over the test data (Figures 2 and 4, top)."""
        from pathlib import Path

        from ..plotting import plot_decision_boundary

        x, y = self.test_set.tensors
        x2d = x[:, [0, 2]] if self.embed_dim == 4 else x
        plot_decision_boundary(
            net, x2d, y, embed if self.embed_dim == 4 else (lambda p: p), Path(out_dir) / "decision_boundary.png", title
        )
