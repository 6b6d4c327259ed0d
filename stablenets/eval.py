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
import time
from pathlib import Path

import torch
import yaml
from omegaconf import open_dict

from .errors import ConfigError
from .provenance import provenance
from .search_path import compose_config, recorded_search_path, searchpath_override
from .train import build_objects, report, write_json


def load_run(run_dir: str | Path, overrides: list[str] = ()):
    """``(cfg, objects)`` of a finished run with its checkpoint loaded, net in eval mode.

    ``objects`` as :func:`stablenets.train.build_objects` returns them: ``datamodule`` (set up for
    testing), ``net``, ``task``, ``lipschitz_L``.
    """
    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "overrides.yaml"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not saved.exists():
        raise ConfigError(f"{run_dir} is not a run dir: {saved} is missing")
    if not ckpt.exists():
        raise ConfigError(f"{run_dir} has no checkpoint at {ckpt}")
    base = yaml.safe_load(saved.read_text()) or []
    search = recorded_search_path(run_dir)
    if search and not any(o.lstrip("+~").startswith("hydra.searchpath=") for o in overrides):
        base.append(searchpath_override(search))
    cfg = compose_config([*base, *overrides])
    saved_cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    with open_dict(cfg):  # no Hydra runtime here: take the resolved names from the run
        cfg.paths.output_dir = str(run_dir)
        cfg.name = saved_cfg.get("name", run_dir.name)
        cfg.group = saved_cfg.get("group", cfg.name)
    objects = build_objects(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    objects["task"].load_state_dict(state)
    objects["task"].eval()
    objects["datamodule"].setup("test")
    return cfg, objects


def evaluate(run_dir: str | Path, overrides: list[str] = (), output_dir: str | Path | None = None) -> dict:
    """Re-evaluate a finished run (:func:`load_run` + the task's evaluation); return what it writes to
    ``<output_dir>/results.json`` (default ``<run dir>/eval/<time>/``): ``metrics``, the robustness curve
    when an attack is set, ``overrides`` and the version fields of :mod:`stablenets.provenance`."""
    cfg, objects = load_run(run_dir, list(overrides))
    out = Path(output_dir) if output_dir else Path(run_dir) / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    extra = objects["task"].evaluate(objects["datamodule"], cfg, out)
    results = {"metrics": extra.pop("metrics", {}), **extra, "overrides": list(overrides), **provenance()}
    write_json(out / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stablenets-eval", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. attack=autoattack_l2 attack.n_iter=200")
    args = parser.parse_args(argv)
    out = Path(args.run_dir) / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        results = evaluate(args.run_dir, args.overrides, out)
    except ConfigError as e:
        print(f"stablenets-eval: error: {e}", file=sys.stderr)
        sys.exit(2)
    report(results["metrics"], out)


if __name__ == "__main__":
    main()
