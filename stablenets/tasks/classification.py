"""Classification (Swiss roll, images): cross-entropy or the multi-class margin loss of Section 6.2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Task

LOSSES = ("cross_entropy", "margin")


class ClassificationTask(Task):
    def __init__(self, net, optimizer, scheduler=None, scheduler_interval: str = "step",
                 loss: str = "cross_entropy", margin: float = 1.0) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.loss_name, self.margin = loss, margin

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "margin":
            return F.multi_margin_loss(logits, y, margin=self.margin)
        return F.cross_entropy(logits, y)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.loss(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=split != "test", batch_size=len(y))
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=split != "train", batch_size=len(y))
        return loss


    # -- after training ---------------------------------------------------------------------------
    def evaluate(self, datamodule, cfg, out_dir) -> dict:
        """Lipschitz bound, robustness curve (when an attack is configured), task figures."""
        import math
        from pathlib import Path

        import pandas as pd

        from ..plotting import plot_curves
        from ..robustness import robustness_curve

        out_dir = Path(out_dir)
        self.net.eval()
        metrics, extra = {}, {}
        bound = float(self.net.lipschitz_bound()) if hasattr(self.net, "lipschitz_bound") else math.inf
        if math.isfinite(bound):
            metrics["test/lipschitz_bound"] = bound
        attack = cfg.get("attack")
        if attack is not None and attack.get("name", "none") != "none":
            from omegaconf import OmegaConf

            rob = robustness_curve(self.net, datamodule.test_dataloader(), OmegaConf.to_container(attack, resolve=True),
                                   convention=cfg.get("certificate", "sqrt2"), box=getattr(datamodule, "box", None))
            for row in rob["curve"]:
                e = f"{row['eps']:.4g}"
                metrics[f"test/robust_acc/eps_{e}"] = row["pgd_acc"]
                if row["certified_acc"] is not None:
                    metrics[f"test/certified_acc/eps_{e}"] = row["certified_acc"]
                if row["autoattack_acc"] is not None:
                    metrics[f"test/autoattack_acc/eps_{e}"] = row["autoattack_acc"]
            metrics["test/pgd_seconds"] = rob["pgd_seconds"]
            if rob["autoattack_seconds"] is not None:
                metrics["test/autoattack_seconds"] = rob["autoattack_seconds"]
            df = pd.DataFrame(rob["curve"])
            df.to_csv(out_dir / "robustness.csv", index=False)
            curves = {"PGD": (df.eps, df.pgd_acc)}
            if df.certified_acc.notna().any():
                curves["certified"] = (df.eps, df.certified_acc)
            if df.autoattack_acc.notna().any():
                curves["AutoAttack"] = (df.eps, df.autoattack_acc)
            plot_curves(curves, out_dir / "robustness.png", "ε (L2)", "accuracy", title=str(cfg.get("name", "")))
            extra["robustness"] = rob
        if hasattr(datamodule, "figures"):
            datamodule.figures(self.net, out_dir, title=str(cfg.get("name", "")))
        return {"metrics": metrics, **extra}
