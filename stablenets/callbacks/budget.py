r"""Equal-time budgets, as "1-Lipschitz Layers Compared" (Prach et al., CVPR 2024) trains its layer families:
a run given a wall-clock budget (``trainer.max_time``) trains for as many epochs as its measured epoch time
allows, with its learning-rate schedule stretched to exactly that many epochs.

:class:`EpochBudget` measures the first epoch (training and validation, from the start of training to the
end of the epoch), then plans ``n = max(1, ⌊budget / t₁⌋)`` epochs (at most ``trainer.max_epochs``, which is
the cap), sets the trainer's epoch count to ``n`` and re-plans the scheduler over ``n × steps per epoch``
optimizer steps, continuing at the current step (:meth:`stablenets.tasks.Task.stretch_schedule`): the run
ends with a whole one-cycle, never one cut short.  Lightning's own time limit is lifted once the count is
planned — the budget decides the count, the count decides when training ends (the comparison's protocol:
estimate the epochs, then train them all).  Until the plan, the schedule is the one for ``trainer.max_epochs``
epochs: the first epoch of a budget run follows the start of a longer warm-up (learning rates at most one
epoch's worth of warm-up below the stretched schedule's); a budget shorter than the first epoch leaves that
one epoch (Lightning's limit may end it early), nothing to stretch.

It also records, every epoch, what the comparison tabulates: ``budget/seconds_per_epoch`` (mean wall time of
the epochs so far), ``budget/epochs`` (planned; the cap without a budget), ``budget/epochs_reached``,
``memory/peak_mb`` (GPU: peak allocated by PyTorch; CPU: the process's peak resident set during training)
and ``memory/train_mb`` (that peak minus what was in use when training started), and
``model/parameters``.  The plan is saved with the checkpoints, so that a resumed run keeps it.
"""

from __future__ import annotations

import ctypes
import gc
import math
import time
from pathlib import Path
from typing import Any

import lightning as pl
import torch
from lightning.pytorch.callbacks import Timer

from ..tasks.base import Task


def _rss_mb(field: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MiB, from ``/proc/self/status``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``clear_refs`` 5); False where not possible.

    Memory that earlier work freed is first handed back to the system (``malloc_trim``, glibc): a multirun's
    jobs run one after another in one process, and a previous job's freed heap would otherwise stay resident
    and count in this one's peak (a run after a 12 GB job reported a 12 GB peak)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the peak may include memory freed earlier in the process
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class EpochBudget(pl.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.planned: int | None = None
        self.epoch_seconds: list[float] = []
        self._epoch_start: float | None = None
        self._base_mb: float | None = None
        self._peak_tracked = False

    # -- the budget ---------------------------------------------------------------------------------------
    @staticmethod
    def _timer(trainer: pl.Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)

    @classmethod
    def budget_seconds(cls, trainer: pl.Trainer) -> float | None:
        """The run's ``trainer.max_time`` in seconds, or None."""
        timer = cls._timer(trainer)
        if timer is None or timer.time_remaining() is None:
            return None
        return timer.time_remaining() + timer.time_elapsed()

    @staticmethod
    def steps_per_epoch(trainer: pl.Trainer) -> int:
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError(
                "EpochBudget needs a training set of known length (an iterable of unknown length "
                "cannot be stretched over)"
            )
        return math.ceil(int(batches) / trainer.accumulate_grad_batches)

    def _plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule, budget: float) -> None:
        cap = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 1 else None
        n = max(1, math.floor(budget / self.epoch_seconds[0]))
        n = min(n, cap) if cap else n
        self.planned = int(trainer.strategy.broadcast(n, src=0))  # every DDP rank trains rank 0's count
        self._apply(trainer, pl_module, stretch=True)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stretch: bool) -> None:
        trainer.fit_loop.max_epochs = self.planned
        timer = self._timer(trainer)
        if timer is not None:  # the count is planned: Lightning's time limit must not cut the schedule short
            timer._duration = None  # noqa: SLF001 (Timer has no public setter; tests/test_budget.py checks it)
        if stretch and trainer.lr_scheduler_configs and self.planned > trainer.current_epoch + 1:
            if not isinstance(pl_module, Task):
                raise TypeError(f"{type(pl_module).__name__} cannot re-plan its schedule (not a stablenets Task)")
            pl_module.stretch_schedule(self.planned * self.steps_per_epoch(trainer))

    # -- hooks --------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.planned is not None:  # resumed: the plan and the scheduler's state came with the checkpoint
            self._apply(trainer, pl_module, stretch=False)
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self._base_mb = torch.cuda.memory_allocated(device) / 2**20
        else:
            self._peak_tracked = _reset_peak_rss()
            self._base_mb = _rss_mb("VmRSS")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls this after the epoch's validation: the epoch time includes it
        if self._epoch_start is None:
            return
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        budget = self.budget_seconds(trainer)
        if self.planned is None and budget is not None:
            self._plan(trainer, pl_module, budget)
        peak = self.peak_mb(pl_module.device)
        log = {
            "budget/seconds_per_epoch": sum(self.epoch_seconds) / len(self.epoch_seconds),
            "budget/epochs": float(self.planned if self.planned is not None else trainer.max_epochs),
            "budget/epochs_reached": float(trainer.current_epoch + 1),
            "model/parameters": float(sum(p.numel() for p in pl_module.parameters())),
        }
        if peak is not None:
            log["memory/peak_mb"] = peak
            if self._base_mb is not None:
                log["memory/train_mb"] = max(0.0, peak - self._base_mb)
        for key, value in log.items():
            pl_module.log(key, value, sync_dist=False)

    def peak_mb(self, device: torch.device) -> float | None:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20
        return _rss_mb("VmHWM") if self._peak_tracked else None

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "epoch_seconds": list(self.epoch_seconds)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.planned = state_dict.get("planned")
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
