"""Learning a vector field from ``(x, ẋ)`` pairs (Section 5.1), judged by rollouts of the learned ODE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contracts import Evaluation, LyapunovFunction
from .base import Task


class DynamicsTask(Task):
    def __init__(
        self,
        net,
        optimizer,
        scheduler=None,
        scheduler_interval: str = "step",
        long_horizon_factor: float = 10.0,
        converged_tol: float = 0.01,
    ) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.long_horizon_factor, self.converged_tol = long_horizon_factor, converged_tol

    def _step(self, batch, split: str) -> torch.Tensor:
        x, dx = batch
        loss = F.mse_loss(self.net(x), dx)
        self.log_metric(split, "loss" if split == "train" else "mse", loss, len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        with torch.enable_grad():  # the Lyapunov field differentiates V
            self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        with torch.enable_grad():
            self._step(batch, "test")

    def rollout(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from torchdiffeq import odeint

        with torch.no_grad():
            return odeint(lambda _t, x: self.net(x), x0, t, method="rk4")

    # -- after training ---------------------------------------------------------------------------
    def evaluate(self, datamodule, cfg) -> Evaluation:
        """Held-out trajectory error, long rollouts (bounded? converging to x̄?), Lyapunov-condition rate;
        the figures get the long rollouts (``rollouts``)."""
        self.net.eval()
        device = next(self.net.parameters()).device
        x0, x_bar = datamodule.test_x0, datamodule.equilibrium
        t, true = datamodule.trajectories(x0)
        pred = self.rollout(x0.to(device), t.to(device)).cpu()
        t_long, true_long = datamodule.trajectories(x0, datamodule.horizon * self.long_horizon_factor)
        pred_long = self.rollout(x0.to(device), t_long.to(device)).cpu()
        final = (pred_long[-1] - x_bar).norm(dim=-1)
        metrics = {
            "test/trajectory_mse": float((pred - true).pow(2).sum(-1).mean()),
            "test/long_final_dist_max": float(final.nan_to_num(float("inf")).max()),
            "test/long_converged_frac": float((final < self.converged_tol).float().mean()),
            "test/long_bounded_frac": float((pred_long.norm(dim=-1).amax(0) < 1e3).float().mean()),
        }
        if isinstance(self.net, LyapunovFunction):
            g = torch.Generator().manual_seed(0)
            xs = ((torch.rand(100_000, 2, generator=g) * 2 - 1) * datamodule.radius * 1.5).to(device)
            v, grad = self.net.V_and_grad(xs)
            with torch.enable_grad():
                field = self.net(xs).detach()
            lhs = (grad * field).sum(-1)
            metrics["test/lyapunov_holds_frac"] = float((lhs <= -self.net.mu * v + 1e-5 * (1 + v.abs())).float().mean())
        return Evaluation(metrics, figures={"rollouts": {"pred": pred_long, "true": true_long}})
