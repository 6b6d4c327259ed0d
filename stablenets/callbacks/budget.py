r"""Equal-time budgets, as "1-Lipschitz Layers Compared" (Prach et al., CVPR 2024) trains its layer families: a run
given a wall-clock budget (``trainer.max_time``) trains for as many optimizer steps as its measured step time
allows, with its learning-rate schedule planned over exactly those steps.

:class:`TimeBudget` times the run's first optimizer steps (``measure_steps`` of them after ``skip_steps`` warm-up
steps, or the whole first epoch when it is shorter), then plans ``N = ⌊budget / seconds per step⌋`` steps (at most
``trainer.max_epochs`` epochs' worth, the cap) and re-plans the schedule over ``N`` steps, continuing at the current
step (:meth:`stablenets.tasks.Task.stretch_schedule`): the run ends with a whole one-cycle, never one cut short —
also when ``N`` is less than one epoch. A step's cost may change as training goes (the gradient-flow block's
sub-step count grows with its learned time): at the end of each epoch the remaining budget is checked against the
epoch's own step time, and where the planned steps would miss the budget by more than ``replan_tolerance`` (5%) they
are re-planned the same way, from the current step. As in the comparison's protocol, the budget is **training** time
(the reference estimates it from timed SGD steps); validation, with its certified accuracy, is timed apart and
recorded (``budget/val_seconds``), so that a table can say what each run spent on both.

The budget is the callback's, not Lightning's: at ``setup`` it takes ``trainer.max_time`` from Lightning's timer and
lifts that timer's limit, so that the planned steps decide when training ends — also in a run resumed from a
checkpoint (a requeued SLURM job, a killed run relaunched), whatever wall time its earlier segments spent.  The
plan (the step count and the timings it came from) is in every checkpoint written after it, and a resumed run
trains exactly the planned steps; a run killed before its plan measures again.

Recorded every epoch: ``budget/steps`` (planned) and ``budget/steps_reached``, ``budget/epochs`` (planned, may be
fractional) and ``budget/epochs_reached``, ``budget/seconds_per_step`` (measured), ``budget/seconds_per_epoch``
(mean wall time of the epochs so far, validation included), ``budget/train_seconds`` and ``budget/val_seconds``,
``memory/peak_mb`` (GPU: peak allocated by PyTorch; CPU: the process's peak resident set during training),
``memory/train_mb`` (that peak minus what was in use when training started) and ``model/parameters``.
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

from ..checks import check_count
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
    and count in this one's peak."""
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


class TimeBudget(pl.Callback):
    """See the module docstring.  ``measure_steps``: timed steps the plan is made from; ``skip_steps``: steps
    before them left untimed (the first steps pay one-time costs: allocations, first certified norms)."""

    def __init__(self, measure_steps: int = 20, skip_steps: int = 2, replan_tolerance: float = 0.05) -> None:
        super().__init__()
        check_count(measure_steps=measure_steps)
        check_count(0, skip_steps=skip_steps)
        if not replan_tolerance >= 0:
            raise ValueError(f"replan_tolerance must be >= 0, got {replan_tolerance}")
        self.measure_steps, self.skip_steps = measure_steps, skip_steps
        self.replan_tolerance = replan_tolerance
        self.replans = 0
        self._epoch_start: tuple[float, int] | None = None  # (train_seconds, global_step) when the epoch began
        self.budget: float | None = None  # seconds of training, from trainer.max_time
        self.planned_steps: int | None = None
        #: the configured trainer.max_epochs: the cap of every plan (a plan sets the trainer's own max_epochs to
        #: its epochs, which must not cap the next re-plan)
        self.max_epochs: int | None = None
        self.step_seconds: list[float] = []  # the timed steps
        self.epoch_seconds: list[float] = []
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self._t_step: float | None = None
        self._t_epoch: float | None = None
        self._t_val: float | None = None
        self._base_mb: float | None = None
        self._peak_tracked = False

    # -- the budget ---------------------------------------------------------------------------------------
    @staticmethod
    def _timer(trainer: pl.Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)

    @staticmethod
    def steps_per_epoch(trainer: pl.Trainer) -> int:
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError(
                "TimeBudget needs a training set of known length (an iterable of unknown length cannot be planned over)"
            )
        return max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))

    def seconds_per_step(self) -> float:
        timed = self.step_seconds[self.skip_steps :] or self.step_seconds
        return sum(timed) / len(timed)

    def _plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule, seconds_per_step: float | None = None) -> None:
        """Plan the steps the budget buys: from the first timed steps, or (``seconds_per_step`` given, a re-plan)
        the steps done plus what the remaining training budget buys at that rate."""
        spe = self.steps_per_epoch(trainer)
        done = int(trainer.global_step)
        if seconds_per_step is None:
            n = max(done + 1, math.floor(self.budget / self.seconds_per_step()))
        else:
            n = done + max(1, math.floor(max(0.0, self.budget - self.train_seconds) / seconds_per_step))
        if self.max_epochs is not None and self.max_epochs >= 1:
            n = min(n, self.max_epochs * spe)
        n = max(n, done + 1)
        self.planned_steps = int(trainer.strategy.broadcast(n, src=0))  # every DDP rank trains rank 0's count
        self._apply(trainer)
        if trainer.lr_scheduler_configs and self.planned_steps > done + 1:
            if not isinstance(pl_module, Task):
                raise TypeError(f"{type(pl_module).__name__} cannot re-plan its schedule (not a stablenets Task)")
            pl_module.stretch_schedule(self.planned_steps)

    def _apply(self, trainer: pl.Trainer) -> None:
        """Train exactly the planned steps (the last one stops the run and has it validate, mid-epoch if need be;
        ``max_steps`` is the backstop)."""
        trainer.fit_loop.epoch_loop.max_steps = self.planned_steps
        trainer.fit_loop.max_epochs = math.ceil(self.planned_steps / self.steps_per_epoch(trainer))

    # -- hooks --------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # before a checkpoint is restored and before Lightning's timer first checks its limit (on_fit_start)
        timer = self._timer(trainer)
        if stage == "fit":
            self.max_epochs = trainer.max_epochs
        if stage == "fit" and timer is not None and timer._duration is not None:  # noqa: SLF001 (no public setter)
            self.budget = float(timer._duration)  # noqa: SLF001
            timer._duration = None  # noqa: SLF001 -- the plan decides when training ends

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.planned_steps is not None:  # resumed: the plan and the scheduler's state came with the checkpoint
            self._apply(trainer)
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self._base_mb = torch.cuda.memory_allocated(device) / 2**20
        else:
            self._peak_tracked = _reset_peak_rss()
            self._base_mb = _rss_mb("VmRSS")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_epoch = time.perf_counter()
        self._epoch_start = (self.train_seconds, int(trainer.global_step))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        self._t_step = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if self._t_step is None:
            return
        seconds = time.perf_counter() - self._t_step
        self.train_seconds += seconds
        if self.planned_steps is not None:
            if trainer.global_step >= self.planned_steps:
                trainer.should_stop = True  # ends here, mid-epoch if need be, after a last validation
            return
        if self.budget is None:
            return
        self.step_seconds.append(seconds * trainer.accumulate_grad_batches)
        if len(self.step_seconds) >= self.skip_steps + self.measure_steps:
            self._plan(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_val = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every validation hook (certified validation included): the whole pass is timed
        if self._t_val is not None and not trainer.sanity_checking:
            self.val_seconds += time.perf_counter() - self._t_val
        self._t_val = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls this after the epoch's validation: the epoch time includes it
        if self._t_epoch is None:
            return
        self.epoch_seconds.append(time.perf_counter() - self._t_epoch)
        if self.planned_steps is None and self.budget is not None and self.step_seconds:
            self._plan(trainer, pl_module)  # a first epoch shorter than the measurement: plan from what it timed
        elif (step := self._epoch_seconds_per_step(trainer)) is not None and self._drifted(trainer, step):
            self.replans += 1
            self._plan(trainer, pl_module, step)
        spe = self.steps_per_epoch(trainer)
        steps = self.planned_steps if self.planned_steps is not None else (trainer.max_epochs or 0) * spe
        log = {
            "budget/steps": float(steps),
            "budget/steps_reached": float(trainer.global_step),
            "budget/epochs": steps / spe,
            "budget/epochs_reached": float(trainer.current_epoch + 1),
            "budget/seconds_per_epoch": sum(self.epoch_seconds) / len(self.epoch_seconds),
            "budget/train_seconds": self.train_seconds,
            "budget/val_seconds": self.val_seconds,
            "budget/replans": float(self.replans),
            "model/parameters": float(sum(p.numel() for p in pl_module.parameters())),
        }
        if self.step_seconds:
            log["budget/seconds_per_step"] = self.seconds_per_step()
        peak = self.peak_mb(pl_module.device)
        if peak is not None:
            log["memory/peak_mb"] = peak
            if self._base_mb is not None:
                log["memory/train_mb"] = max(0.0, peak - self._base_mb)
        for key, value in log.items():
            pl_module.log(key, value, sync_dist=False)

    def _epoch_seconds_per_step(self, trainer: pl.Trainer) -> float | None:
        """Training seconds per optimizer step in the epoch that just ended (``None`` before one step)."""
        if self._epoch_start is None:
            return None
        seconds, step = self._epoch_start
        steps = int(trainer.global_step) - step
        return (self.train_seconds - seconds) / steps if steps > 0 else None

    def _drifted(self, trainer: pl.Trainer, step: float) -> bool:
        """Would the planned steps, at ``step`` seconds each, miss the budget by more than the tolerance?"""
        if self.planned_steps is None or self.budget is None or trainer.should_stop:
            return False
        left = self.planned_steps - int(trainer.global_step)
        if left < 1:
            return False
        miss = abs(self.train_seconds + left * step - self.budget)
        return miss > self.replan_tolerance * self.budget and miss > 5 * step  # not for a step or two

    def peak_mb(self, device: torch.device) -> float | None:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20
        return _rss_mb("VmHWM") if self._peak_tracked else None

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "planned_steps": self.planned_steps,
            "step_seconds": list(self.step_seconds),
            "epoch_seconds": list(self.epoch_seconds),
            "train_seconds": self.train_seconds,
            "val_seconds": self.val_seconds,
            "replans": self.replans,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.planned_steps = state_dict.get("planned_steps")
        self.step_seconds = list(state_dict.get("step_seconds", []))
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.val_seconds = float(state_dict.get("val_seconds", 0.0))
        self.replans = int(state_dict.get("replans", 0))
