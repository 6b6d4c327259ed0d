"""A run's output dir and what is on disk in it.

``config.yaml`` (the resolved config), ``results.json`` (written last and atomically: its presence marks
the run finished), ``error.txt`` (the traceback of a failed run, so that a sweep's table lists it),
``checkpoints/last.ckpt`` (and Lightning's SLURM ``hpc_ckpt_*.ckpt``), the loggers' files and the report.
Under DDP only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RESULTS = "results.json"
ERROR = "error.txt"


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as JSON, atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


def run_id(output_dir: str | Path) -> str:
    """Deterministic id of a run dir (W&B run id: a resumed run continues the same W&B run)."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


class RunDir:
    """The output dir of one run; ``writer`` is whether this process writes files (rank 0)."""

    def __init__(self, path: str | Path, writer: bool = True) -> None:
        self.path, self.writer = Path(path), writer

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def id(self) -> str:
        return run_id(self.path)

    def finished(self) -> bool:
        """Whether an earlier run completed here (``results.json`` and no ``error.txt``)."""
        return self.results.exists() and not (self.path / ERROR).exists()

    def saved_results(self) -> dict[str, Any]:
        """``results.json`` of a finished run (a damaged one is reported, naming the file)."""
        from .inputs import read_json

        return read_json(self.results)

    def start(self) -> None:
        """Create the dir and clear an earlier failure's ``error.txt``."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ERROR).unlink(missing_ok=True)

    def save_config(self, cfg: DictConfig) -> None:
        if self.writer:
            (self.path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def latest_checkpoint(self) -> Path | None:
        """The newest of ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` (saved on preemption)."""
        cands = [
            p for p in [self.path / "checkpoints" / "last.ckpt", *self.path.glob("hpc_ckpt_*.ckpt")] if p.is_file()
        ]
        return max(cands, key=lambda p: p.stat().st_mtime) if cands else None

    def write_results(self, results: dict[str, Any]) -> None:
        if self.writer:
            write_json(self.results, results)

    def fail(self, error: BaseException) -> None:
        """Record a failure (the current traceback) so that a sweep lists the run; a ``SystemExit`` — a SLURM
        job leaving to be requeued after a time-out or preemption — is unfinished, not failed."""
        if self.writer and not isinstance(error, SystemExit):
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ERROR).write_text(traceback.format_exc())
