"""After training: evaluate where the run trained, write the report and ``results.json``, log the results,
and fail the run if the certificate audit broke a certificate (the results are kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..contracts import Evaluation
from .errors import CertificateError
from .files import load_checkpoint, state_fingerprint
from .loggers import log_results
from .overrides import current_overrides
from .provenance import provenance
from .reporting import write_report
from .run_dir import RunDir, config_fingerprint, resolved


def on_training_device(task, trainer) -> None:
    """Lightning leaves the module on the CPU after fit/test: move it back to where it trained, in float32
    or wider (certificates are never computed in half precision)."""
    task.to(trainer.strategy.root_device)
    if task.dtype in (torch.float16, torch.bfloat16):
        task.float()


def check_audit(metrics: dict[str, float], results_path: Path) -> None:
    """Raise :class:`CertificateError` when the audit found an attack inside a certified radius."""
    violations = int(metrics.get("test/certificate_violations", 0))
    if violations:
        raise CertificateError(
            f"the certificate audit broke {violations} of "
            f"{int(metrics['test/certificate_audited'])} certified (ε, image) pairs: a reported "
            f"Lipschitz bound is wrong (results kept in {results_path})"
        )


def fingerprint(cfg: DictConfig, run: RunDir) -> dict[str, str | None]:
    """What ties ``results.json`` to its run: the hash of the config (the keys that define the run) and of the
    checkpoint's weights — checked wherever a run is read (:meth:`RunDir.status`, ``stablenets-eval``,
    ``stablenets-export``)."""
    ckpt = run.latest_checkpoint()
    weights = state_fingerprint(load_checkpoint(ckpt)["state_dict"]) if ckpt is not None else None
    return {"config": config_fingerprint(resolved(cfg)), "weights": weights}


def evaluate_and_record(
    cfg: DictConfig,
    objects: dict[str, Any],
    metrics: dict[str, float],
    run: RunDir,
    loggers: list,
    resumed_from: Path | None,
    flush_denormal: bool | str | None = None,
) -> tuple[Evaluation, dict[str, Any]]:
    """The task's evaluation, the report, the loggers' last entries and ``results.json``; ``metrics`` gains
    the evaluation's.  Returns ``(evaluation, results)``."""
    task, dm = objects["task"], objects["datamodule"]
    on_training_device(task, objects["trainer"])
    evaluation = task.evaluate(dm, cfg)
    metrics.update(evaluation.metrics)
    write_report(evaluation, run.path, dm, task.net, title=str(cfg.get("name", "")))
    log_results(loggers, metrics, evaluation)
    results = {
        "metrics": metrics,
        **evaluation.results(),
        "name": cfg.get("name"),
        "group": cfg.get("group"),
        "run_id": run.id,
        "overrides": current_overrides(),
        "lipschitz_L": objects["lipschitz_L"],
        "resumed_from": str(resumed_from) if resumed_from else None,
        "flush_denormal": flush_denormal,
        "fingerprint": fingerprint(cfg, run),
        **provenance(),
    }
    run.write_results(results)
    check_audit(metrics, run.results)
    return evaluation, results
