"""What a run shows while it works: a progress bar on a terminal, otherwise a concise line at most every
``every`` seconds (logs, batch jobs), nothing with ``progress=none``; and nothing else from the libraries
underneath but their warnings and errors.

``progress: auto`` (the default) picks ``bar`` when standard output is a terminal and ``lines`` otherwise.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning as pl

from ..robustness.progress import MODES, resolve

__all__ = ["MODES", "resolve", "quiet", "ProgressLines"]

# Messages that say nothing about the run: silenced one by one, never by category
_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning's own utilities
    r"The `srun` command is available on your system but is not used",  # any machine with SLURM client tools
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`training_step` returned `None`",
)


def quiet() -> None:
    """Lightning's informational lines (devices found, tips, "fit stopped") off; the known noise filtered."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


class ProgressLines(pl.Callback):
    """One line at most every ``every`` seconds during training, and one when it ends: epoch, step, the
    latest loss and validation metrics, elapsed seconds, and the sub-step counts of gradient-flow blocks
    with their sum (what one forward pass costs)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._start = self._last = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.perf_counter() - self._last >= self.every:
            self._line(trainer, pl_module, batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if time.perf_counter() - self._last >= self.every:
            self._line(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line(trainer, pl_module, final=True)

    def _line(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: int | None = None, final: bool = False
    ) -> None:
        self._last = time.perf_counter()
        if not trainer.is_global_zero:
            return
        from ..nn.gradient_flow import GradientFlowBlock

        m = trainer.callback_metrics
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        # the running (or just finished) epoch, 1-based; after training, current_epoch already counts them all
        where = f"epoch {trainer.current_epoch if final else trainer.current_epoch + 1}/{epochs}"
        if batch:
            where += f" batch {batch}/{trainer.num_training_batches}"
        parts = [f"step {trainer.global_step}"]
        for key in ("train/loss_step", "val/acc", "val/loss", "val/mse"):
            if key in m:
                parts.append(f"{key.replace('_step', '')} {_fmt(m[key])}")
        n = [b.n_steps for b in pl_module.modules() if isinstance(b, GradientFlowBlock)]
        if n:  # per block, and their sum: the sub-steps one forward pass costs
            parts.append(f"sub-steps {'+'.join(map(str, n))}={sum(n)}")
        parts.append(f"{self._last - self._start:.0f} s")
        print(f"stablenets: {'done ' if final else ''}{where}  " + "  ".join(parts), flush=True)
