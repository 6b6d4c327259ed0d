"""Supervised reconstruction for the inverse problem (Section 6.1): MSE between ``net(y)`` and ``x†``.

The paper's loss is the mean over samples of ``‖InvNet(y) − x†‖²`` (a sum over coordinates), which is
what ``train/loss`` and ``test/mse`` report.

The evaluation's cost is stated in the results: the measured Lipschitz constant comes from a search of
``test/lipschitz_passes`` calls of the net (:func:`~stablenets.robustness.lipschitz.search_passes`), each of
``model/substeps`` Euler sub-steps for a gradient-flow net (eq. 19); ``eval/seconds`` is its wall time.
"""

from __future__ import annotations

import time

import torch

from ..baselines import grid_search, reconstruct
from ..contracts import Evaluation, LipschitzBounded
from ..nn.gradient_flow import substep_budget, substep_cap
from ..robustness import empirical_lipschitz
from ..robustness.lipschitz import search_passes
from .base import Task

# the empirical Lipschitz search of the evaluation: random pairs, Jacobian power iteration, ascent on the ratio
LIPSCHITZ_SEARCH = {"n_pairs": 512, "scales": (1e-3, 0.1, 1.0), "jacobian_iters": 10, "ascent_steps": 100}


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
        t0 = time.perf_counter()
        self.net.train()
        substeps_train = substep_budget(self.net)  # from the final estimates, as in the last training steps
        self.net.eval()
        device = next(self.net.parameters()).device
        y_tr, x_tr = datamodule.arrays("train")
        y_te, x_te = datamodule.arrays("test")
        with torch.no_grad():
            pred = self.net(y_te.to(device)).cpu()
        tik = grid_search(datamodule.A, y_tr, x_tr)
        tik_pred = reconstruct(datamodule.A.double(), y_te.double(), tik["tau_star"]).float()
        measured = empirical_lipschitz(
            self.net, y_te.to(device), generator=torch.Generator().manual_seed(0), **LIPSCHITZ_SEARCH
        )
        metrics = {
            "test/mse": float(sample_mse(pred, x_te)),
            "test/lipschitz_measured": measured,
            "tikhonov/test_mse": float(sample_mse(tik_pred, x_te)),
            "tikhonov/tau_star": tik["tau_star"],
            "tikhonov/L_star": tik["L_star"],
        }
        if isinstance(self.net, LipschitzBounded):
            metrics["test/lipschitz_bound"] = float(self.net.lipschitz_bound())
        metrics["test/lipschitz_passes"] = search_passes(
            len(LIPSCHITZ_SEARCH["scales"]), LIPSCHITZ_SEARCH["jacobian_iters"], LIPSCHITZ_SEARCH["ascent_steps"]
        )
        metrics["model/substeps"] = substep_budget(self.net)  # per eval-mode forward (certified norms)
        metrics["model/substeps_train"] = substeps_train
        cap = substep_cap(self.net)
        if cap is not None:
            metrics["model/substeps_cap"] = cap
        metrics["eval/seconds"] = time.perf_counter() - t0
        return Evaluation(
            metrics,
            figures={
                "reconstructions": {
                    "y": y_te,
                    "x": x_te,
                    "pred": pred,
                    "tikhonov": tik_pred,
                    "tau_star": tik["tau_star"],
                }
            },
        )
