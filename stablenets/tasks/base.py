"""The LightningModule shared by every task: it wraps any ``net`` with an optimizer and a scheduler."""
from __future__ import annotations

import functools
from typing import Any, Callable

import lightning as L
import torch
from torch import nn


class Task(L.LightningModule):
    """``net`` is a plain ``nn.Module``; ``optimizer`` / ``scheduler`` are partials from the config
    (``_partial_: true``).  A scheduler that needs the run length gets it: ``total_steps`` for
    ``OneCycleLR``, ``T_max`` (in optimizer steps) for ``CosineAnnealingLR``."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, scheduler_interval: str = "step") -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        """Loss of one batch of ``split`` (train / val / test), logged under ``split/...``."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return opt
        factory = self.scheduler_factory
        target = factory.func if isinstance(factory, functools.partial) else factory
        steps = int(self.trainer.estimated_stepping_batches)
        if target is torch.optim.lr_scheduler.OneCycleLR:
            sched = factory(opt, total_steps=steps)
        elif target is torch.optim.lr_scheduler.CosineAnnealingLR and "T_max" not in factory.keywords:
            sched = factory(opt, T_max=steps)
        else:
            sched = factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.scheduler_interval}}
