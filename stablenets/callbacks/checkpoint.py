"""``checkpoints/last.ckpt`` after every epoch, written so that a kill cannot corrupt it.

Lightning's ``ModelCheckpoint`` with ``save_top_k=0`` writes ``last.ckpt`` only when training ends, so a job
killed mid-training had nothing to resume from; and it writes in place, so a kill during the write leaves a
truncated file.  This callback writes the whole trainer state (weights, power-method buffers, optimizer,
scheduler, loop counters) to a temporary file and renames it into place after every ``every_n_epochs``
epochs and at the end of training.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as pl

from ..checks import check_count


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt", every_n_epochs: int = 1) -> None:
        check_count(every_n_epochs=every_n_epochs)
        self.path = Path(dirpath) / filename
        self.every_n_epochs = every_n_epochs

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        tmp = self.path.with_name(self.path.name + ".part")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, to resume
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)
