"""From overrides to a composed config, and from a config to the run's objects, with clear errors.

:func:`compose` is the one way the project composes ``train.yaml`` outside the command line (the API,
``stablenets-eval``, the recipes, the benchmark, the tests).  :func:`build_objects` checks the config and
builds the data module, the net and the task: every error a user can cause by a config value surfaces
there as :class:`ConfigError` naming the key, before any training starts.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write

from ..contracts import LinearInverseProblem
from ..data.base import DataError
from .errors import ConfigError
from .search_path import compose_config
from .validation import check_config, check_lipschitz, check_model_size


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """The config ``stablenets-train <overrides>`` would run, its outputs going to ``output_dir``.

    ``output_dir`` defaults to the CLI's run dir, ``outputs/runs/<name>/<time>`` under the cwd.  The config
    carries Hydra's own node (``cfg.hydra``: choices, overrides, search path) next to the run's keys, and
    Hydra's state is set as in a CLI run, so that ``${hydra:...}`` (the run and data set names, taken from
    the config choices) resolves.
    """
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config(list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...}: the run name in the default run dir
    out = Path(output_dir if output_dir is not None else cfg.hydra.run.dir).expanduser().absolute()
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.run.dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A copy of a :func:`compose`'d config without Hydra's node: the run's own keys, as a CLI job sees them."""
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def target_params(node: DictConfig) -> dict[str, inspect.Parameter]:
    """The parameters of ``node._target_``'s constructor, by name."""
    module, _, name = str(node._target_).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {node._target_!r}: {e}") from None
    return dict(inspect.signature(obj).parameters)


def build(group: str, node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, with constructor errors reported against the config group."""
    if node is None or "_target_" not in node:
        raise ConfigError(f"config group '{group}' has no _target_ to build")
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause) if isinstance(cause, (ValueError, TypeError)) else str(e)
        raise ConfigError(f"invalid '{group}' config ({node._target_}): {msg}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid '{group}' config ({node._target_}): {e}") from None


def resolve_lipschitz(node: DictConfig, datamodule) -> float | None:
    """The bound ``L`` to impose: absolute, or ``scale × L*`` of the Tikhonov baseline on the training data."""
    check_lipschitz(node)
    if node.get("relative_to") == "tikhonov":
        if not isinstance(datamodule, LinearInverseProblem):
            raise ConfigError("lipschitz.relative_to=tikhonov needs a linear inverse problem (data=inverse_2d)")
        from ..baselines import grid_search

        y, x = datamodule.arrays("train")
        return float(node.scale) * grid_search(datamodule.A, y, x)["L_star"]
    return None if node.get("L") is None else float(node.L)


def build_objects(cfg: DictConfig) -> dict[str, Any]:
    """Data module, net and task from the config (no trainer), every setting checked first.

    Returns ``{"datamodule", "net", "task", "lipschitz_L"}``; raises :class:`ConfigError` on bad input.
    """
    check_config(cfg)
    dm = build("data", cfg.data, seed=cfg.seed)
    try:
        dm.check_available()
    except DataError as e:
        raise ConfigError(str(e)) from None
    bound = resolve_lipschitz(cfg.lipschitz, dm)
    model_kwargs: dict[str, Any] = {"in_shape": tuple(dm.in_shape), "out_dim": dm.out_dim}
    params = target_params(cfg.model)
    if bound is not None:
        if "L" not in params:
            raise ConfigError(
                f"model {cfg.model._target_} takes no Lipschitz bound; use lipschitz=none or a "
                "constrained model (nonexpansive, conv_nonexpansive, invnet)"
            )
        model_kwargs["L"] = bound
    elif "L" in params and params["L"].default is inspect.Parameter.empty and cfg.model.get("L") is None:
        raise ConfigError(
            f"model {cfg.model._target_} needs a Lipschitz bound: set lipschitz.L=<value> or "
            "lipschitz.relative_to=tikhonov lipschitz.scale=<multiple>"
        )
    check_model_size(cfg.model, lambda: build("model", cfg.model, **model_kwargs))  # fits in memory?
    torch.manual_seed(cfg.seed)
    net = build("model", cfg.model, **model_kwargs)
    task = build("task", cfg.task, net=net)
    try:
        task.check_optimization()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid task.optimizer / task.scheduler: {e}") from None
    return {"datamodule": dm, "net": net, "task": task, "lipschitz_L": bound}
