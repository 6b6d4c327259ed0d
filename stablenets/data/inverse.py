r"""The ill-conditioned 2-D inverse problem of Example 1 / Section 6.1.

Ground truth ``x†`` lies on a circular arc (Figures 1 and 6): ``x = (cos θ, sin θ − ½)`` with
``θ ~ U[θ_0, π − θ_0]``, plus a small radial spread ``spread``.  Measurements
``y = A x† + z`` (eq. 32) with ``A = [[1+ε, 1], [1, 1+ε]]``, ``ε = 1/4`` and white Gaussian ``z`` of std
``noise``.  Inputs are measurements, targets ground truths.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_count, check_nonnegative
from .base import TensorDataModule


def forward_operator(eps: float = 0.25) -> torch.Tensor:
    return torch.tensor([[1 + eps, 1.0], [1.0, 1 + eps]])


def arc_points(n: int, generator: torch.Generator, theta0: float = math.pi / 6, spread: float = 0.02) -> torch.Tensor:
    theta = theta0 + (math.pi - 2 * theta0) * torch.rand(n, generator=generator)
    r = 1.0 + spread * torch.randn(n, generator=generator)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta) - 0.5], 1)


class InverseProblemDataModule(TensorDataModule):
    in_shape = (2,)
    out_dim = 2

    def __init__(
        self,
        n_train: int = 100,
        n_val: int = 100,
        n_test: int = 500,
        eps: float = 0.25,
        noise: float = 0.1,
        spread: float = 0.02,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_count(n_train=n_train, n_val=n_val, n_test=n_test)
        check_nonnegative(noise=noise)
        self.sizes, self.noise, self.spread = (n_train, n_val, n_test), noise, spread
        self.A = forward_operator(eps)

    def measure(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x @ self.A.t() + self.noise * torch.randn(x.shape, generator=generator)

    def build(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        sets = []
        for n in self.sizes:
            x = arc_points(n, g, spread=self.spread)
            sets.append(self.tensors(self.measure(x, g), x))
        self.train_set, self.val_set, self.test_set = sets

    def arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, x)`` of a split as tensors."""
        self.setup()
        ds = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        return ds.tensors[0], ds.tensors[1]
