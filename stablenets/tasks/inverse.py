"""Supervised reconstruction for the inverse problem (Section 6.1): MSE between ``net(y)`` and ``x†``.

The paper's loss is the mean over samples of ``‖InvNet(y) − x†‖²`` (a sum over coordinates), which is
what ``train/loss`` and ``test/mse`` report.
"""
from __future__ import annotations

import torch

from .base import Task


def sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).sum(1).mean()


class InverseProblemTask(Task):
    def _step(self, batch, split: str) -> torch.Tensor:
        y, x = batch
        loss = sample_mse(self.net(y), x)
        self.log(f"{split}/{'loss' if split == 'train' else 'mse'}", loss, on_step=split == "train",
                 on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss


    # -- after training ---------------------------------------------------------------------------
    def evaluate(self, datamodule, cfg, out_dir) -> dict:
        """Test MSE, the Tikhonov baseline on the same data, the bound L and the measured Lipschitz constant."""
        from pathlib import Path

        import pandas as pd

        from ..baselines import grid_search, reconstruct
        from ..plotting import plot_point_sets
        from ..robustness import empirical_lipschitz

        out_dir = Path(out_dir)
        self.net.eval()
        y_tr, x_tr = datamodule.arrays("train")
        y_te, x_te = datamodule.arrays("test")
        with torch.no_grad():
            pred = self.net(y_te)
        tik = grid_search(datamodule.A, y_tr, x_tr)
        tik_pred = reconstruct(datamodule.A.double(), y_te.double(), tik["tau_star"]).float()
        measured = empirical_lipschitz(self.net, y_te, n_pairs=512, ascent_steps=200,
                                       generator=torch.Generator().manual_seed(0))
        metrics = {
            "test/mse": float(sample_mse(pred, x_te)),
            "test/lipschitz_measured": measured,
            "tikhonov/test_mse": float(sample_mse(tik_pred, x_te)),
            "tikhonov/tau_star": tik["tau_star"],
            "tikhonov/L_star": tik["L_star"],
        }
        if hasattr(self.net, "lipschitz_bound"):
            metrics["test/lipschitz_bound"] = float(self.net.lipschitz_bound())
        pd.DataFrame({"y1": y_te[:, 0], "y2": y_te[:, 1], "x1": x_te[:, 0], "x2": x_te[:, 1],
                      "pred1": pred[:, 0], "pred2": pred[:, 1]}).to_csv(out_dir / "test_predictions.csv", index=False)
        plot_point_sets({"ground truth": {"x†": x_te.numpy()},
                         f"Tikhonov τ*={tik['tau_star']:.3g}": {"x̂": tik_pred.numpy()},
                         f"{cfg.get('name', 'net')} (L={metrics.get('test/lipschitz_bound', float('nan')):.3g})":
                             {"x̂": pred.numpy()}}, out_dir / "reconstruction.png")
        return {"metrics": metrics}
