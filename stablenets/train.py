"""Hydra entry point: ``stablenets-train [overrides]`` composes ``conf/train.yaml`` and calls :func:`train`.

``train(cfg)`` checks the config and builds data, model and task, trains and tests, runs the task's
evaluation (robustness curve, Lipschitz checks, figures) and writes, under the run's output dir:
``config.yaml``, ``results.json`` (written last: its presence marks the run finished),
``checkpoints/last.ckpt`` and the loggers' files.  A run dir that already holds ``results.json`` is
skipped; one that holds a checkpoint is resumed from it.  Each step lives in :mod:`stablenets.runner`.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
import lightning as pl
from omegaconf import DictConfig

from .ranks import global_rank
from .runner import progress
from .runner.config import build_objects
from .runner.errors import USER_ERRORS, CertificateError, exit_code
from .runner.fit import fit_and_test, set_threads
from .runner.loggers import finish, make_loggers
from .runner.numerics import flush_denormals
from .runner.record import evaluate_and_record
from .runner.reporting import print_summary
from .runner.run_dir import RunDir, RunDirError
from .runner.search_path import CONF_DIR  # conf/ of a checkout or stablenets/conf of a wheel; registers user dirs


def train(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate one run; return ``(metrics, objects)``.

    ``objects``: ``datamodule``, ``net``, ``task``, ``lipschitz_L``, ``trainer``, ``results`` (all of
    ``results.json``) and ``evaluation``; ``{"skipped": True, "results": ...}`` for a finished run dir of the same
    config.  ``hydra_cfg``: Hydra's node of the run (written to ``.hydra/``).  The run dir holds one run: a
    launch of another config into a dir with a run, or into a dir another process writes, is refused before
    anything is written (:meth:`RunDir.check_launch`, :meth:`RunDir.lock`).  A failure once the launch is
    accepted leaves ``error.txt`` (so a sweep's table lists it) and is re-raised.  Under DDP every rank trains;
    rank 0 alone evaluates and writes files.
    """
    progress.quiet()
    run = RunDir(cfg.paths.output_dir, writer=global_rank() == 0)
    loggers: list = []
    with run.lock():
        fresh = not run.is_run()  # a failure before this launch writes anything marks only a new dir failed
        try:
            resume = cfg.get("resume", True)
            if resume and run.is_run():
                status = run.status()
                if status.state == "damaged":
                    raise RunDirError(f"{status.reason}")
                run.check_launch(cfg)  # the dir's run is this config's, or nothing is touched
                if status.state == "finished":
                    print(f"stablenets: {run.path} already finished; skipping (delete {run.results.name} to re-run)")
                    saved = run.saved_results()
                    return saved["metrics"], {"skipped": True, "results": saved}
            if fresh:  # a new dir: its overrides first, so that a sweep lists this job even if it fails at once
                run.start()
                run.save_hydra(cfg, hydra_cfg)
            flush = flush_denormals(cfg.get("flush_denormal", True))  # before torch starts its threads
            objects = build_objects(cfg)  # every config error surfaces here, before any work
            if not fresh:  # the dir's own run, relaunched: its record is rewritten only now
                run.start()
                run.save_hydra(cfg, hydra_cfg)
                fresh = True
            set_threads(cfg.get("num_threads", "auto"), objects["datamodule"])
            run.save_config(cfg)
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            loggers = make_loggers(cfg, run)
            metrics, objects["trainer"], resumed_from = fit_and_test(cfg, objects, run, loggers)
            if not run.writer:
                return metrics, objects
            objects["evaluation"], objects["results"] = evaluate_and_record(
                cfg, objects, metrics, run, loggers, resumed_from, flush_denormal=flush
            )
        except BaseException as e:
            if fresh:
                run.fail(e)
            raise
        finally:
            finish(loggers)
    return metrics, objects


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        metrics, objects = train(cfg, HydraConfig.get())
    except (*USER_ERRORS, CertificateError) as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed and goes on with the others
        print(f"stablenets: error: {e}", file=sys.stderr)
        sys.exit(exit_code(e))
    if global_rank() == 0:
        print_summary(metrics, cfg.paths.output_dir, objects.get("evaluation"))
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    main()
