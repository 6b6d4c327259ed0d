"""Turning a composed Hydra config into objects, with clear errors for bad input.

Every error a user can cause by a config value surfaces here as :class:`ConfigError` naming the config
key, before any training starts.
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError


def check_missing(cfg: DictConfig) -> None:
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(f"missing required value(s): {', '.join(missing)}. Set them on the command line, "
                          f"e.g. {missing[0]}=<value>.")


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


def check_lipschitz(node: DictConfig) -> None:
    L, scale, rel = node.get("L"), node.get("scale", 1.0), node.get("relative_to")
    if L is not None and not (isinstance(L, (int, float)) and L > 0 and math.isfinite(L)):
        raise ConfigError(f"lipschitz.L must be a positive number, got {L!r}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ConfigError(f"lipschitz.scale must be a positive number, got {scale!r}")
    if rel not in (None, "tikhonov"):
        raise ConfigError(f"lipschitz.relative_to must be null or 'tikhonov', got {rel!r}")
    if L is not None and rel is not None:
        raise ConfigError("set either lipschitz.L (absolute) or lipschitz.relative_to (+ lipschitz.scale), not both")


def check_settings(cfg: DictConfig) -> None:
    """The run's own top-level settings."""
    from .progress import MODES
    from .robustness.certify import CONVENTIONS

    if str(cfg.get("progress", "auto")) not in MODES:
        raise ConfigError(f"progress must be one of {', '.join(MODES)}, got {cfg.get('progress')!r}")
    if cfg.get("certificate", "sqrt2") not in CONVENTIONS:
        raise ConfigError(f"certificate must be one of {', '.join(CONVENTIONS)}, got {cfg.get('certificate')!r}")
    threads = cfg.get("num_threads", "auto")
    if not (threads in (None, "auto") or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)):
        raise ConfigError(f"num_threads must be auto, null or an integer >= 1, got {threads!r}")


def check_attack(node: DictConfig | None) -> None:
    """The attack's settings, checked before training rather than after it."""
    if node is None or node.get("name", "none") == "none":
        return
    eps = node.get("eps")
    if eps is None or not all(isinstance(e, (int, float)) and e >= 0 for e in eps):
        raise ConfigError(f"attack.eps must be a list of numbers >= 0, got {eps!r}")
    for key in ("n_iter", "restarts"):
        if not isinstance(node.get(key, 1), int) or node.get(key, 1) < 1:
            raise ConfigError(f"attack.{key} must be an integer >= 1, got {node.get(key)!r}")
    chunk = node.get("chunk_size", "auto")
    if not (chunk is None or chunk == "auto" or (isinstance(chunk, int) and chunk >= 1)):
        raise ConfigError(f"attack.chunk_size must be 'auto', null or an integer >= 1, got {chunk!r}")
    if node.get("loss", "ce") not in ("ce", "margin"):
        raise ConfigError(f"attack.loss must be 'ce' or 'margin', got {node.get('loss')!r}")


def resolve_lipschitz(node: DictConfig, datamodule) -> float | None:
    """The bound ``L`` to impose: absolute, or ``scale × L*`` of the Tikhonov baseline on the training data."""
    check_lipschitz(node)
    if node.get("relative_to") == "tikhonov":
        if not hasattr(datamodule, "A"):
            raise ConfigError("lipschitz.relative_to=tikhonov needs a linear inverse problem (data=inverse_2d)")
        from .baselines import grid_search

        y, x = datamodule.arrays("train")
        return float(node.scale) * grid_search(datamodule.A, y, x)["L_star"]
    return None if node.get("L") is None else float(node.L)
