"""Classification (Swiss roll, images) with any loss of :mod:`stablenets.losses`."""

from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf

from ..contracts import Evaluation, LipschitzBounded
from ..losses import CrossEntropy
from ..robustness import robustness_curve
from .base import Task


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
        if row.get("certified_sqrt2_acc") is not None:
            metrics[f"test/certified_sqrt2_acc/eps_{e}"] = row["certified_sqrt2_acc"]
    metrics["test/pgd_seconds"] = rob["pgd_seconds"]
    if rob["autoattack_seconds"] is not None:
        metrics["test/autoattack_seconds"] = rob["autoattack_seconds"]
    metrics["test/certificate_audited"] = rob["certificate_audit"]["audited"]
    metrics["test/certificate_violations"] = rob["certificate_audit"]["violations"]
    return metrics


class ClassificationTask(Task):
    def __init__(
        self, net, optimizer, scheduler=None, scheduler_interval: str = "step", loss: torch.nn.Module | None = None
    ) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.loss = loss if loss is not None else CrossEntropy()

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.loss(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log_metric(split, "loss", loss, len(y))
        self.log_metric(split, "acc", acc, len(y), step=False)
        return loss

    def evaluate(self, datamodule, cfg) -> Evaluation:
        """Lipschitz bound and robustness curve (when an attack is configured), on the net's device."""
        self.net.eval()
        evaluation = Evaluation()
        metrics = evaluation.metrics
        if isinstance(self.net, LipschitzBounded):
            bound = float(self.net.lipschitz_bound())
            if math.isfinite(bound):
                metrics["test/lipschitz_bound"] = bound
        attack = cfg.get("attack")
        if attack is not None and attack.get("name", "none") != "none":
            rob = robustness_curve(
                self.net,
                datamodule.test_dataloader(),
                OmegaConf.to_container(attack, resolve=True),
                convention=cfg.get("certificate", "sqrt2"),
                box=getattr(datamodule, "box", None),
                progress=cfg.get("progress", "none"),
            )
            metrics.update(curve_metrics(rob))
            evaluation.robustness = rob
        return evaluation
