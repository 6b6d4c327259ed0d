"""Hydra entry point: ``stablenets-train [overrides]`` composes ``conf/train.yaml`` and calls :func:`train`.

``train(cfg)`` builds data, model, task, callbacks and loggers from the config, trains, tests, runs the
task's evaluation (robustness curve, Lipschitz checks, figures) and writes, under the run's output dir:
``config.yaml``, ``results.json`` (written last: its presence marks the run finished),
``checkpoints/last.ckpt`` and the logger's files.  A run dir that already holds ``results.json`` is
skipped; one that holds ``checkpoints/last.ckpt`` is resumed from it.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from .distributed import local_ddp, replica_max_diff
from .config import (build, check_attack, check_lipschitz, check_missing, check_settings, resolve_lipschitz,
                     target_params)
from .errors import ConfigError
from . import progress
from .progress import ProgressLines
from .provenance import provenance
from .runner.numerics import flush_denormals
from .reporting import results_part, summary, write_report
from .search_path import CONF_DIR  # conf/ of a checkout or stablenets/conf of a wheel; also registers user dirs

RESULTS = "results.json"


def run_id(output_dir: str | Path) -> str:
    """Deterministic id of a run dir (W&B run id: a resumed run continues the same W&B run)."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)  # atomic: a reader never sees half a results.json


def build_objects(cfg: DictConfig) -> dict[str, Any]:
    """Data module, net and task from the config (no trainer).  Raises :class:`ConfigError` on bad input."""
    check_missing(cfg)
    check_settings(cfg)
    check_lipschitz(cfg.lipschitz)
    check_attack(cfg.get("attack"))
    dm = build("data", cfg.data, seed=cfg.seed)
    if hasattr(dm, "check_available"):
        dm.check_available()
    bound = resolve_lipschitz(cfg.lipschitz, dm)
    model_kwargs: dict[str, Any] = {"in_shape": tuple(dm.in_shape), "out_dim": dm.out_dim}
    params = target_params(cfg.model)
    if bound is not None:
        if "L" not in params:
            raise ConfigError(f"model {cfg.model._target_} takes no Lipschitz bound; use lipschitz=none or a "
                              "constrained model (nonexpansive, conv_nonexpansive, invnet)")
        model_kwargs["L"] = bound
    elif "L" in params and params["L"].default is inspect.Parameter.empty and cfg.model.get("L") is None:
        raise ConfigError(f"model {cfg.model._target_} needs a Lipschitz bound: set lipschitz.L=<value> or "
                          "lipschitz.relative_to=tikhonov lipschitz.scale=<multiple>")
    torch.manual_seed(cfg.seed)
    net = build("model", cfg.model, **model_kwargs)
    task = build("task", cfg.task, net=net)
    try:
        task.check_optimization()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid task.optimizer / task.scheduler: {e}") from None
    return {"datamodule": dm, "net": net, "task": task, "lipschitz_L": bound}


def _callbacks(cfg: DictConfig, out: Path) -> list[L.Callback]:
    cbs = [ProgressLines()] if progress.resolve(cfg.get("progress")) == "lines" else []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        extra = {"output_dir": str(out)} if "output_dir" in target_params(node) and node.get("output_dir") is None else {}
        cbs.append(build(f"callbacks.{key}", node, **extra))
    return cbs


def _loggers(cfg: DictConfig, out: Path) -> list:
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        wandb = "Wandb" in str(node._target_)
        if wandb:
            os.environ.setdefault("WANDB_MODE", "offline" if node.get("offline", True) else "online")
        logger = build(f"logger.{key}", node, **({"id": node.get("id") or run_id(out)} if wandb else {}))
        if wandb:  # the full resolved config, so dashboards can group and filter by any key
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        loggers.append(logger)
    return loggers


def latest_checkpoint(out: Path) -> Path | None:
    """The newest of ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` (saved on preemption)."""
    cands = [p for p in [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


class CertificateError(RuntimeError):
    """The certificate audit found an adversarial example inside a certified radius: a bound is wrong."""


def _finished(out: Path) -> bool:
    return (out / RESULTS).exists() and not (out / "error.txt").exists()


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate one run; return ``(metrics, objects)``.

    A failure of any kind leaves ``error.txt`` in the run dir (so a sweep's table lists it) and is re-raised.
    Under DDP every rank trains; rank 0 alone evaluates and writes files.
    """
    progress.quiet()
    out = Path(cfg.paths.output_dir)
    results_path = out / RESULTS
    if cfg.get("resume", True) and _finished(out):
        saved = json.loads(results_path.read_text())
        print(f"stablenets: {out} already finished; skipping (delete {RESULTS} to re-run)")
        return saved["metrics"], {"skipped": True, "results": saved}
    rank_zero = _rank() == 0
    if rank_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").unlink(missing_ok=True)
    loggers: list = []
    try:
        flush = flush_denormals(cfg.get("flush_denormal", True))  # before torch starts its threads
        objects = build_objects(cfg)  # every config error surfaces here, before any work
        _set_threads(cfg.get("num_threads", "auto"), objects["datamodule"])
        if rank_zero:
            (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm, task = objects["datamodule"], objects["task"]
        loggers = _loggers(cfg, out)
        with local_ddp(cfg, out):  # the extra ranks of a local DDP run, if any
            trainer = build("trainer", cfg.trainer, callbacks=_callbacks(cfg, out), logger=loggers or False,
                            enable_progress_bar=progress.resolve(cfg.get("progress")) == "bar")
            ckpt = latest_checkpoint(out) if cfg.get("resume", True) else None
            if ckpt and rank_zero:
                print(f"stablenets: resuming {out} from {ckpt}")
            t0 = time.perf_counter()
            trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
            train_seconds = time.perf_counter() - t0
            metrics = _scalars(trainer.callback_metrics)
            if trainer.world_size > 1:  # weights and power-method state must be identical on every rank
                metrics["ddp/replica_max_diff"] = replica_max_diff(task)
            if cfg.get("test", True):
                metrics.update(_scalars(trainer.test(task, datamodule=dm, verbose=False)[0]))
        metrics["train/seconds"] = train_seconds
        objects.update(trainer=trainer)
        if not trainer.is_global_zero:
            return metrics, objects
        # Lightning leaves the module on the CPU after fit/test: evaluate where it trained, in float32 or wider
        task.to(trainer.strategy.root_device)
        if task.dtype in (torch.float16, torch.bfloat16):
            task.float()
        evaluation = task.evaluate(dm, cfg) if hasattr(task, "evaluate") else {"metrics": {}}
        metrics.update(evaluation["metrics"])
        write_report(evaluation, out, dm, task.net, title=str(cfg.get("name", "")))
        extra = {k: v for k, v in results_part(evaluation).items() if k != "metrics"}
        for lg in loggers:
            lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            _log_tables(lg, extra)
        results = {"metrics": metrics, **extra, "name": cfg.get("name"), "group": cfg.get("group"),
                   "run_id": run_id(out), "overrides": _overrides(), "lipschitz_L": objects["lipschitz_L"],
                   "resumed_from": str(ckpt) if ckpt else None, "flush_denormal": flush, **provenance()}
        write_json(results_path, results)
        violations = int(metrics.get("test/certificate_violations", 0))
        if violations:
            raise CertificateError(f"the certificate audit broke {violations} of "
                                   f"{int(metrics['test/certificate_audited'])} certified (ε, image) pairs: a reported "
                                   f"Lipschitz bound is wrong (results kept in {results_path})")
    except BaseException as e:
        # SystemExit: a preempted or timed-out SLURM job leaving to be requeued is unfinished, not failed
        if rank_zero and not isinstance(e, SystemExit):
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        _finish_wandb(loggers)
    objects.update(results=results, evaluation=evaluation)
    return metrics, objects


def _rank() -> int:
    """Global rank of this process as the launcher set it (0 outside distributed runs)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _set_threads(setting, datamodule) -> None:
    """``auto``: one intra-op thread for small vector problems (thread hand-offs cost more than the
    tiny matrix products they split), the torch default otherwise; an integer sets it."""
    import math

    if setting == "auto":
        if math.prod(datamodule.in_shape) <= 64:
            torch.set_num_threads(1)
    elif setting is not None:
        torch.set_num_threads(int(setting))


def _scalars(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))}


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, AttributeError):
        return []


def _log_tables(logger, extra: dict) -> None:
    """Robustness curve as a W&B table + line plot (dashboards overlay them across runs)."""
    if "Wandb" not in type(logger).__name__ or "robustness" not in extra:
        return
    import wandb

    rows = extra["robustness"]["curve"]
    cols = ["eps", "pgd_acc", "autoattack_acc", "certified_acc"]
    table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])
    logger.experiment.log({"robustness/curve": table,
                           "robustness/pgd_plot": wandb.plot.line(table, "eps", "pgd_acc", title="PGD accuracy vs eps")})


def _finish_wandb(loggers) -> None:
    if any("Wandb" in type(lg).__name__ for lg in loggers):
        import wandb

        wandb.finish()


def report(metrics: dict[str, Any], out: Path, evaluation: dict[str, Any] | None = None) -> None:
    print("stablenets: results\n" + summary(metrics, evaluation, out))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        metrics, objects = train(cfg)
    except (ConfigError, CertificateError) as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed and goes on with the others
        print(f"stablenets: error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 3)
    if _rank() == 0:
        report(metrics, Path(cfg.paths.output_dir), objects.get("evaluation"))
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    main()
