"""Classification (Swiss roll, images): cross-entropy or the multi-class margin loss of Section 6.2."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ..robustness import robustness_curve
from .base import Task

LOSSES = ("cross_entropy", "margin")


def curve_metrics(rob: dict) -> dict[str, float]:
    """The robustness curve as flat metrics ``test/<kind>_acc/eps_<ε>`` (W&B and pandas pivot on them)."""
    metrics = {}
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
    metrics["test/certificate_audited"] = rob["certificate_audit"]["audited"]
    metrics["test/certificate_violations"] = rob["certificate_audit"]["violations"]
    return metrics


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
        self.log_metric(split, "loss", loss, len(y))
        if split != "train":
            self.log_metric(split, "acc", acc, len(y))
        return loss

    def evaluate(self, datamodule, cfg) -> dict:
        """Lipschitz bound and robustness curve (when an attack is configured), on the net's device."""
        self.net.eval()
        metrics, extra = {}, {}
        if hasattr(self.net, "lipschitz_bound"):
            bound = float(self.net.lipschitz_bound())
            if math.isfinite(bound):
                metrics["test/lipschitz_bound"] = bound
        attack = cfg.get("attack")
        if attack is not None and attack.get("name", "none") != "none":
            rob = robustness_curve(self.net, datamodule.test_dataloader(), OmegaConf.to_container(attack, resolve=True),
                                   convention=cfg.get("certificate", "sqrt2"), box=getattr(datamodule, "box", None))
            metrics.update(curve_metrics(rob))
            extra["robustness"] = rob
        return {"metrics": metrics, **extra}
