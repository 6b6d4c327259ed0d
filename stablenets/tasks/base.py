"""The LightningModule shared by every task: it wraps any ``net`` with an optimizer and a scheduler."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import lightning as pl
import torch
from torch import nn

from ..checks import TrainingDiverged
from ..contracts import Evaluation


class Task(pl.LightningModule):
    """``net`` is a plain ``nn.Module``; ``optimizer`` / ``scheduler`` are partials from the config
    (``_partial_: true``).  A scheduler that needs the run length gets it: ``total_steps`` for
    ``OneCycleLR``, ``T_max`` (in optimizer steps) for ``CosineAnnealingLR``."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self._means = nn.ModuleDict()  # epoch means of val/test metrics, reduced over DDP ranks as sums

    def log_metric(
        self, split: str, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = True, step: bool = True
    ) -> None:
        """``split/name``: in training ``train/<name>_step`` per step and rank (with ``step``), ``train/<name>`` the
        epoch mean;
        in val/test an exact epoch mean over all samples of all ranks (a weighted ``MeanMetric``, synchronised
        once per epoch)."""
        if split == "train":  # the step value stays per rank (no collective per step); the epoch mean is reduced
            if step:
                self.log(
                    f"train/{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size
                )
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
            return
        from torchmetrics import MeanMetric

        key = f"{split}_{name}"
        if key not in self._means:
            self._means[key] = MeanMetric().to(value.device)
        self._means[key].update(value.detach(), weight=batch_size)
        self.log(
            f"{split}/{name}",
            self._means[key],
            on_step=False,
            on_epoch=True,
            prog_bar=prog_bar and split == "val",
            metric_attribute=f"_means.{key}",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        """Loss of one batch of ``split`` (train / val / test), logged under ``split/...``."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def check_finite(self) -> None:
        """:class:`TrainingDiverged` when a weight is not finite (one reduction over all parameters): a diverged
        run stops with that message instead of evaluating, certifying and reporting a net of ``nan``s."""
        params = [p.detach() for p in self.parameters() if p.numel()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            bad = next(n for n, p in self.named_parameters() if p.numel() and not bool(torch.isfinite(p).all()))
            raise TrainingDiverged(
                f"training diverged: the weights are not finite ({bad}, after {self.global_step} optimizer steps, "
                f"epoch {self.current_epoch}). Lower task.optimizer.lr, or clip gradients (trainer.gradient_clip_val)"
            )

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.check_finite()

    def on_test_epoch_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def evaluate(self, datamodule, cfg) -> Evaluation:
        """What the trained net is judged by after testing (the robustness curve, the Lipschitz search, ...),
        on the net's own device; a task with nothing to add returns no metrics."""
        return Evaluation()

    def check_optimization(self) -> None:
        """Build the optimizer and scheduler once on a stand-in parameter, so that a bad setting (a negative
        learning rate, an unknown argument) is reported before training rather than after data loading."""
        if self.optimizer_factory is None:
            return
        opt = self.optimizer_factory(params=[nn.Parameter(torch.zeros(1))])
        if self.scheduler_factory is not None:
            self._scheduler(opt, steps=10)

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self._scheduler(opt, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.scheduler_interval}}

    def stretch_schedule(self, total_steps: int) -> None:
        """Re-plan the running schedule over ``total_steps`` optimizer steps, continuing at the current step (an
        equal-time budget sets the run's length after timing its first steps: see
        :class:`stablenets.callbacks.TimeBudget`).  The learning rates (and momenta) of the optimizer are those of
        the new schedule at the current step.  Only schedules whose shape depends on the run's length are
        re-planned (``OneCycleLR``; ``CosineAnnealingLR`` without a fixed ``T_max``); any other runs on as it is."""
        configs = self.trainer.lr_scheduler_configs
        if self.scheduler_factory is None or not configs or not self._length_dependent():
            return
        done = int(self.trainer.global_step)
        if total_steps < done + 1:
            raise ValueError(f"cannot stretch the schedule to {total_steps} steps: {done} are done already")
        opt = configs[0].scheduler.optimizer
        for group in opt.param_groups:  # a new schedule starts from the optimizer's settings, not the old one's
            group.pop("initial_lr", None)
        sched = self._scheduler(opt, total_steps)
        if done:
            sched.last_epoch = done - 1
            sched.step()  # OneCycleLR: its closed form at step ``done``, the new schedule's rates
            if hasattr(sched, "_get_closed_form_lr"):  # a recursive schedule (cosine): set the closed form too
                lrs = sched._get_closed_form_lr()
                for group, lr in zip(opt.param_groups, lrs):
                    group["lr"] = lr
                sched._last_lr = list(lrs)
        configs[0].scheduler = sched

    def _length_dependent(self) -> bool:
        factory = self.scheduler_factory
        target = factory.func if isinstance(factory, functools.partial) else factory
        keywords = factory.keywords if isinstance(factory, functools.partial) else {}
        return target is torch.optim.lr_scheduler.OneCycleLR or (
            target is torch.optim.lr_scheduler.CosineAnnealingLR and "T_max" not in keywords
        )

    def _scheduler(self, opt: torch.optim.Optimizer, steps: int):
        factory = self.scheduler_factory
        target = factory.func if isinstance(factory, functools.partial) else factory
        if target is torch.optim.lr_scheduler.OneCycleLR:
            return factory(opt, total_steps=steps)
        if target is torch.optim.lr_scheduler.CosineAnnealingLR and "T_max" not in factory.keywords:
            return factory(opt, T_max=steps)
        return factory(opt)
