"""``stablenets-eval <run dir> [overrides]``: re-evaluate a finished run from its saved config and checkpoint.

The evaluation model is rebuilt from the run's own composed config (its ``.hydra/overrides.yaml``, with the
user config dirs it was composed with, from ``.hydra/hydra.yaml``) plus the new overrides — e.g.
``attack=autoattack_l2`` or ``attack.n_iter=500`` — and the weights (including the power-method buffers)
come from ``checkpoints/last.ckpt``.  Results go to ``<run dir>/eval/<time>/``.  A ``hydra.searchpath=[...]``
among the new overrides replaces the recorded user config dirs (e.g. when they have moved).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import open_dict

from .runner.config import build_objects, compose, without_hydra
from .runner.errors import USER_ERRORS, CertificateError, ConfigError, exit_code
from .runner.files import load_checkpoint, read_yaml, state_fingerprint, write_json
from .runner.numerics import flush_denormals
from .runner.overrides import override_key, override_value
from .runner.provenance import provenance
from .runner.record import check_audit
from .runner.reporting import print_summary, write_report
from .runner.run_dir import RunDir
from .runner.search_path import recorded_search_path, searchpath_override


def load_run(run_dir: str | Path, overrides: list[str] = ()):
    """``(cfg, objects)`` of a finished run with its checkpoint loaded, net in eval mode.

    ``objects`` as :func:`stablenets.runner.config.build_objects` returns them: ``datamodule`` (set up for
    testing), ``net``, ``task``, ``lipschitz_L``, plus ``results`` (the run's ``results.json``).  A run that is not
    finished (failed, unfinished, damaged), or whose checkpoint is not the one its ``results.json`` reports on,
    is refused with a message saying which.
    """
    run = RunDir(run_dir)
    results = run.finished_results()
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        raise ConfigError(f"{run.path} has no checkpoint at {run.checkpoint}")
    base = read_yaml(run.overrides, list) or []
    search = recorded_search_path(run.path)
    if search and not any(override_key(o) == "hydra.searchpath" for o in overrides):
        base.append(searchpath_override(search))
    cfg = without_hydra(compose([*base, *overrides], output_dir=run.path))
    saved_cfg = run.saved_config() if run.config.exists() else {}
    with open_dict(cfg):  # the run's own names (a recipe may have set group on its command line)
        cfg.paths.output_dir = str(run.path)
        cfg.name = saved_cfg.get("name", cfg.name)
        cfg.group = saved_cfg.get("group", cfg.name)
    objects = build_objects(cfg)
    state = load_checkpoint(ckpt)["state_dict"]
    recorded = (results.get("fingerprint") or {}).get("weights")
    if recorded is not None and state_fingerprint(state) != recorded:
        raise ConfigError(
            f"{ckpt} is not the checkpoint {run.results} reports on (its weights differ from the run's); restore the "
            "run's own checkpoint, or delete results.json to re-run"
        )
    try:
        objects["task"].load_state_dict(state)
    except RuntimeError as e:  # a checkpoint of another model (config edited after training)
        raise ConfigError(f"{ckpt} does not fit the run's model: {str(e).splitlines()[0]}") from None
    objects["task"].eval()
    objects["datamodule"].setup("test")
    objects["results"] = results
    return cfg, objects


def eval_device(overrides: list[str] = ()) -> torch.device:
    """``trainer.accelerator`` among the overrides (``auto`` by default, whatever the run trained on)."""
    choice = override_value(list(overrides), "trainer.accelerator", "auto")
    if choice not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator must be auto, cpu or gpu for stablenets-eval, got {choice!r}")
    if choice in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is available")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def new_eval_dir(run_dir: Path) -> Path:
    """``<run>/eval/<time to the microsecond>``, created exclusively: two evaluations never share a dir."""
    while True:
        out = run_dir / "eval" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        try:
            out.mkdir(parents=True, exist_ok=False)
            return out
        except FileExistsError:
            continue


def evaluate(run_dir: str | Path, overrides: list[str] = (), output_dir: str | Path | None = None) -> dict:
    """Re-evaluate a finished run (:func:`load_run` + the task's evaluation) on ``trainer.accelerator`` (an
    override; ``auto`` by default); write its tables, figures and ``results.json`` to ``output_dir`` (default
    a new ``<run dir>/eval/<time>/``) and return the results: ``metrics``, the robustness curve when an
    attack is set, ``overrides``, the device and the version fields of :mod:`stablenets.runner.provenance`."""
    overrides = list(overrides)
    # as in training: subnormals flushed to zero, set before torch starts its threads (flush_denormal=false: off)
    flush = flush_denormals(override_value(overrides, "flush_denormal", "true").lower() != "false")
    device = eval_device(overrides)
    cfg, objects = load_run(run_dir, overrides)
    out = Path(output_dir) if output_dir else new_eval_dir(Path(run_dir))
    out.mkdir(parents=True, exist_ok=True)
    task, dm = objects["task"].to(device), objects["datamodule"]
    evaluation = task.evaluate(dm, cfg)
    write_report(evaluation, out, dm, task.net, title=str(cfg.get("name", "")))
    results = {
        "metrics": evaluation.metrics,
        **evaluation.results(),
        "overrides": overrides,
        "device": str(device),
        "flush_denormal": flush,
        **provenance(),
    }
    write_json(out / "results.json", results)
    return {**results, "output_dir": str(out), "evaluation": evaluation}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stablenets-eval", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. attack=autoattack_l2 attack.n_iter=200")
    args = parser.parse_args(argv)
    try:
        results = evaluate(args.run_dir, args.overrides)
        print_summary(results["metrics"], results["output_dir"], results["evaluation"])
        check_audit(results["metrics"], Path(results["output_dir"]) / "results.json")
    except (*USER_ERRORS, CertificateError) as e:
        print(f"stablenets-eval: error: {e}", file=sys.stderr)
        sys.exit(exit_code(e))


if __name__ == "__main__":
    main()
