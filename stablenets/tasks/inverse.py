"""Supervised reconstruction for the inverse problem (Section 6.1): MSE between ``net(y)`` and ``x†``.

The paper's loss is the mean over samples of ``‖InvNet(y) − x†‖²`` (a sum over coordinates), which is
what ``train/loss`` and ``test/mse`` report.
"""
from __future__ import annotations

import torch

from ..baselines import grid_search, reconstruct
from ..contracts import Evaluation, LipschitzBounded
from ..robustness import empirical_lipschitz
from .base import Task


def sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).sum(1).mean()


class InverseProblemTask(Task):
    def _step(self, batch, split: str) -> torch.Tensor:
        y, x = batch
        loss = sample_mse(self.net(y), x)
        self.log_metric(split, "loss" if split == "train" else "mse", loss, len(y))
        return loss

    def evaluate(self, datamodule, cfg) -> Evaluation:
        """Test MSE, the Tikhonov baseline on the same data, the bound L and the measured Lipschitz constant;
        the figures get the point sets (``reconstructions``)."""
        self.net.eval()
        device = next(self.net.parameters()).device
        y_tr, x_tr = datamodule.arrays("train")
        y_te, x_te = datamodule.arrays("test")
        with torch.no_grad():
            pred = self.net(y_te.to(device)).cpu()
        tik = grid_search(datamodule.A, y_tr, x_tr)
        tik_pred = reconstruct(datamodule.A.double(), y_te.double(), tik["tau_star"]).float()
        measured = empirical_lipschitz(self.net, y_te.to(device), n_pairs=512, ascent_steps=200,
                                       generator=torch.Generator().manual_seed(0))
        metrics = {
            "test/mse": float(sample_mse(pred, x_te)),
            "test/lipschitz_measured": measured,
            "tikhonov/test_mse": float(sample_mse(tik_pred, x_te)),
            "tikhonov/tau_star": tik["tau_star"],
            "tikhonov/L_star": tik["L_star"],
        }
        if isinstance(self.net, LipschitzBounded):
            metrics["test/lipschitz_bound"] = float(self.net.lipschitz_bound())
        return Evaluation(metrics, figures={"reconstructions": {"y": y_te, "x": x_te, "pred": pred, "tikhonov": tik_pred,
                                                                "tau_star": tik["tau_star"]}})
