"""Training a run: threads, callbacks and the trainer from the config, then fit (resuming from the newest
checkpoint) and test.  Local DDP ranks are started around the fit (:mod:`stablenets.runner.ddp`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as pl
import torch
from omegaconf import DictConfig

from . import progress
from .config import build, target_params
from .ddp import local_ddp, replica_max_diff
from .files import check_checkpoint
from .run_dir import RunDir


def set_threads(setting, datamodule) -> None:
    """``auto``: one intra-op thread for small vector problems (thread hand-offs cost more than the
    tiny matrix products they split), the torch default otherwise; an integer sets it."""
    if setting == "auto":
        if math.prod(datamodule.in_shape) <= 64:
            torch.set_num_threads(1)
    elif setting is not None:
        torch.set_num_threads(int(setting))


def make_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    """The progress lines (when chosen) and every callback of the ``callbacks`` group."""
    cbs = [progress.ProgressLines()] if progress.resolve(cfg.get("progress")) == "lines" else []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        extra = (
            {"output_dir": str(out)} if "output_dir" in target_params(node) and node.get("output_dir") is None else {}
        )
        cbs.append(build(f"callbacks.{key}", node, **extra))
    return cbs


def scalars(d: dict) -> dict[str, float]:
    """The scalar entries of a metrics dict (tensors of one element, numbers), as floats."""
    return {k: float(v) for k, v in d.items() if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))}


def fit_and_test(
    cfg: DictConfig, objects: dict[str, Any], run: RunDir, loggers: list
) -> tuple[dict[str, float], pl.Trainer, Path | None]:
    """Fit (resumed from the newest checkpoint when ``resume``), then test; return ``(metrics, trainer,
    the checkpoint resumed from)``.  ``metrics`` holds the last logged values, ``train/seconds`` and, under
    DDP, ``ddp/replica_max_diff`` (weights and power-method state must agree on every rank)."""
    dm, task = objects["datamodule"], objects["task"]
    with local_ddp(cfg, run.path):  # the extra ranks of a local DDP run, if any
        trainer = build(
            "trainer",
            cfg.trainer,
            callbacks=make_callbacks(cfg, run.path),
            logger=loggers or False,
            enable_progress_bar=progress.resolve(cfg.get("progress")) == "bar",
        )
        ckpt = run.latest_checkpoint() if cfg.get("resume", True) else None
        if ckpt:
            check_checkpoint(ckpt)  # a damaged checkpoint is reported, never trained over
            if run.writer:
                print(f"stablenets: resuming {run.path} from {ckpt}")
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
        train_seconds = time.perf_counter() - t0
        metrics = scalars(trainer.callback_metrics)
        if trainer.world_size > 1:
            metrics["ddp/replica_max_diff"] = replica_max_diff(task)
        if cfg.get("test", True):
            metrics.update(scalars(trainer.test(task, datamodule=dm, verbose=False)[0]))
    metrics["train/seconds"] = train_seconds
    return metrics, trainer, ckpt
