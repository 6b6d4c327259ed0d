"""Python API for notebooks and scripts: the CLI's steps as functions.

>>> from stablenets.api import compose, train, evaluate, load_model
>>> cfg = compose(["model=nonexpansive", "lipschitz=bound", "lipschitz.L=2"], output_dir="runs/ne")
>>> metrics, objects = train(cfg)                     # = stablenets-train ... hydra.run.dir=runs/ne
>>> res = evaluate("runs/ne", ["attack=pgd_l2"])      # = stablenets-eval runs/ne attack=pgd_l2
>>> net = load_model("runs/ne")                       # the trained torch module, in eval mode
>>> exported = export("runs/ne")                        # = stablenets-export runs/ne: runs/ne/export/model.{pt2,onnx}

A run trained here is laid out like a CLI run (``.hydra/``, ``config.yaml``, ``results.json``,
``checkpoints/last.ckpt``), so ``stablenets-eval`` and ``stablenets-collect`` read it, and the other way
round.  User config dirs work as on the command line: ``hydra.searchpath=[file:///abs/my_conf]`` among the
overrides, or ``STABLENETS_CONFIG_PATH`` (see :mod:`stablenets.runner.search_path`).  Sweeps stay on the CLI
(``stablenets-train -m``); in Python, loop over :func:`compose` + :func:`train`.

(``stablenets.train`` is the module behind ``stablenets-train``; the function is ``stablenets.api.train``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

__all__ = ["compose", "train", "evaluate", "load_run", "load_model", "export"]


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """The config ``stablenets-train <overrides>`` would run, its outputs going to ``output_dir``.

    ``output_dir`` defaults to the CLI's run dir, ``outputs/runs/<name>/<time>`` under the cwd.  The config
    carries Hydra's own node (``cfg.hydra``: choices, overrides, search path) next to the run's keys, which
    :func:`train` writes to ``.hydra/`` as the CLI does; edit the run's keys freely before training.
    """
    from .runner.config import compose as compose_run

    return compose_run(overrides, output_dir)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, test and evaluate one run from a :func:`compose`'d config; return ``(metrics, objects)``.

    ``metrics``: what ``results.json`` holds under ``metrics``.  ``objects``: ``datamodule``, ``net``, ``task``,
    ``trainer``, ``results`` (all of ``results.json``).  A run dir that already holds ``results.json`` is
    skipped (``objects == {"skipped": True, "results": ...}``), one with a checkpoint is resumed — as on the
    CLI; set ``cfg.resume = False`` to start over.
    """
    from .train import train as train_run

    if "hydra" not in cfg:  # composed elsewhere, e.g. by hydra.compose: needs paths.output_dir set
        return train_run(cfg)
    from hydra.core.hydra_config import HydraConfig

    from .runner.config import without_hydra

    HydraConfig.instance().set_config(cfg)
    return train_run(without_hydra(cfg), cfg.hydra)


def evaluate(run_dir: str | Path, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict:
    """Re-evaluate a finished run from its config and checkpoint, with new overrides (e.g. an attack);
    return the results it writes (default under ``<run dir>/eval/<time>/``).  See :func:`stablenets.eval.evaluate`."""
    from .eval import evaluate as evaluate_run

    return evaluate_run(run_dir, list(overrides), output_dir)


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[DictConfig, dict[str, Any]]:
    """``(cfg, objects)`` of a finished run, weights loaded, in eval mode.  See :func:`stablenets.eval.load_run`."""
    from .eval import load_run as load

    return load(run_dir, list(overrides))


def load_model(run_dir: str | Path):
    """The trained network of a finished run (a ``torch.nn.Module`` in eval mode, checkpoint weights)."""
    return load_run(run_dir)[1]["net"]


def export(run_dir: str | Path, output_dir: str | Path | None = None, n_check: int | None = None) -> dict:
    """Export a finished run as a ``torch.export`` program and an ONNX file with its certificate's metadata;
    return ``export.json``'s content.  See :mod:`stablenets.runner.export`."""
    from .runner.export import export as export_run

    return export_run(run_dir, output_dir, n_check)
