"""Trajectories of a system with a known stable equilibrium, for learning its vector field (Section 5.1).

Initial conditions are drawn (seeded) in a region that the true flow carries to the equilibrium
(a disc of radius ``radius``; for the pendulum, below the separatrix).  Trajectories are integrated with
torchdiffeq (``rk4``, ``dt``) over ``horizon``; training pairs are ``(x, ẋ)`` sampled along the training
trajectories, the test set keeps whole held-out trajectories for rollouts.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from ..checks import check_count, check_positive
from ..systems import SYSTEMS
from .base import TensorDataModule


class DynamicsDataModule(TensorDataModule):
    out_dim = 2
    in_shape = (2,)

    def __init__(
        self,
        system: str = "damped_pendulum",
        n_train_traj: int = 64,
        n_val_traj: int = 16,
        n_test_traj: int = 32,
        horizon: float = 5.0,
        dt: float = 0.05,
        radius: float = 2.5,
        noise: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}; allowed: {sorted(SYSTEMS)}")
        check_count(n_train_traj=n_train_traj, n_val_traj=n_val_traj, n_test_traj=n_test_traj)
        check_positive(horizon=horizon, dt=dt, radius=radius)
        self.system, self.field = system, SYSTEMS[system]
        self.sizes, self.horizon, self.dt, self.radius, self.noise = (
            (n_train_traj, n_val_traj, n_test_traj),
            horizon,
            dt,
            radius,
            noise,
        )
        self.equilibrium = torch.zeros(2)

    def initial_conditions(self, n: int, g: torch.Generator) -> torch.Tensor:
        out = []
        while sum(len(o) for o in out) < n:
            r = self.radius * torch.rand(4 * n, generator=g).sqrt()
            a = 2 * torch.pi * torch.rand(4 * n, generator=g)
            x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
            if self.system == "damped_pendulum":  # below the separatrix: converges to the origin
                x = x[0.5 * x[:, 1] ** 2 + 1 - torch.cos(x[:, 0]) < 1.8]
            elif self.system == "exercise11":  # the basin of the origin contains the disc of radius 0.5
                x = x[x.norm(dim=1) < 0.5]
            out.append(x)
        return torch.cat(out)[:n]

    def trajectories(self, x0: torch.Tensor, horizon: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t, X)`` with ``X`` of shape ``(T, N, 2)`` from the true system."""
        t = torch.arange(0, (horizon or self.horizon) + 1e-9, self.dt)
        with torch.no_grad():
            return t, odeint(lambda _t, x: self.field(x), x0, t, method="rk4")

    def build(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        sets = []
        for n in self.sizes:
            _, traj = self.trajectories(self.initial_conditions(n, g))
            x = traj.reshape(-1, 2)
            dx = self.field(x)
            if self.noise:
                dx = dx + self.noise * torch.randn(dx.shape, generator=g)
            sets.append(self.tensors(x, dx))
        self.train_set, self.val_set, self.test_set = sets
        self.test_x0 = self.initial_conditions(self.sizes[2], torch.Generator().manual_seed(self.seed + 1))
