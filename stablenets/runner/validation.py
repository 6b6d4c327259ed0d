"""Every check of a run's config, before anything is built or written: one module for config validation.

Each raises :class:`~stablenets.runner.errors.ConfigError` naming the key (and the allowed values): missing values,
``nan``/``inf`` in any numeric key, the run's own settings, the Lipschitz bound, the attack, and a model too large
for the machine's memory (counted on the meta device).  Argument checks shared with the science's constructors
are :mod:`stablenets.checks`, reported here against the key they came from.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checks import check_count, check_nonnegative, check_positive
from .errors import ConfigError


def _checked(check, **values) -> None:
    """A shared argument check (:mod:`stablenets.checks`) reported as a :class:`ConfigError`."""
    try:
        check(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_missing(cfg: DictConfig) -> None:
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(
            f"missing required value(s): {', '.join(missing)}. Set them on the command line, e.g. {missing[0]}=<value>."
        )


def check_numbers(cfg: DictConfig, prefix: str = "") -> None:
    """No ``nan`` or ``inf`` in any numeric key of the run's config (a value no setting can mean)."""
    items = cfg.items_ex(resolve=True) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, value in items:
        name = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix[:-1]}[{key}]"
        if name == "hydra":
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            check_numbers(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a finite number: give {name} a finite value")


def check_lipschitz(node: DictConfig) -> None:
    L, rel = node.get("L"), node.get("relative_to")
    _checked(check_positive, **{"lipschitz.L": L, "lipschitz.scale": node.get("scale", 1.0)})
    if rel not in (None, "tikhonov"):
        raise ConfigError(f"lipschitz.relative_to must be null or 'tikhonov', got {rel!r}")
    if L is not None and rel is not None:
        raise ConfigError("set either lipschitz.L (absolute) or lipschitz.relative_to (+ lipschitz.scale), not both")


def check_settings(cfg: DictConfig) -> None:
    """The run's own top-level settings."""
    from ..robustness.certify import CONVENTIONS
    from .progress import MODES

    if str(cfg.get("progress", "auto")) not in MODES:
        raise ConfigError(f"progress must be one of {', '.join(MODES)}, got {cfg.get('progress')!r}")
    if cfg.get("certificate", "sqrt2") not in CONVENTIONS:
        raise ConfigError(f"certificate must be one of {', '.join(CONVENTIONS)}, got {cfg.get('certificate')!r}")
    threads = cfg.get("num_threads", "auto")
    if threads != "auto":
        _checked(check_count, num_threads=threads)


def budget_seconds(value) -> float | None:
    """``trainer.max_time`` in seconds (``DD:HH:MM:SS``, or a mapping of ``timedelta`` keywords), or None."""
    from datetime import timedelta

    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.split(":")]  # as Lightning reads it
            if len(parts) != 4:
                raise ValueError(value)
            if min(parts) < 0:
                return -1.0  # a negative part: no time to train
            return timedelta(days=parts[0], hours=parts[1], minutes=parts[2], seconds=parts[3]).total_seconds()
        return timedelta(
            **OmegaConf.to_container(value) if isinstance(value, DictConfig) else dict(value)
        ).total_seconds()
    except (TypeError, ValueError):
        raise ConfigError(
            f"trainer.max_time={value!r} is not a duration: give DD:HH:MM:SS, e.g. trainer.max_time=00:00:10:00"
        ) from None


def check_trainer(cfg: DictConfig) -> None:
    """A budget, where given, is a positive duration (a zero or negative one would train nothing)."""
    trainer = cfg.get("trainer") or {}
    seconds = budget_seconds(trainer.get("max_time"))
    if seconds is not None and not seconds > 0:
        raise ConfigError(
            f"trainer.max_time={trainer.get('max_time')} leaves no time to train: give a positive budget "
            "(DD:HH:MM:SS), or trainer.max_time=null for none"
        )


def check_data_for_ranks(cfg: DictConfig) -> None:
    """Under DDP every rank takes its share of each split: each needs at least one sample of each split."""
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1) or 1
    if not isinstance(devices, int) or isinstance(devices, bool) or devices * nodes <= 1:
        return
    ranks = devices * nodes
    for key in ("n_train", "n_val", "n_test"):
        n = (cfg.get("data") or {}).get(key)
        if isinstance(n, int) and n < ranks:
            raise ConfigError(
                f"data.{key}={n} is fewer than the {ranks} DDP ranks (trainer.devices={devices}"
                + (f" x trainer.num_nodes={nodes}" if nodes > 1 else "")
                + f"): every rank needs at least one sample. Raise data.{key} or lower trainer.devices"
            )


def check_attack(node: DictConfig | None) -> None:
    """The attack's settings, checked before training rather than after it."""
    if node is None or node.get("name", "none") == "none":
        return
    eps = node.get("eps")
    if eps is None or len(eps) == 0:
        raise ConfigError(f"attack.eps must be a list of numbers >= 0, got {eps!r}")
    _checked(check_nonnegative, **{f"attack.eps[{i}]": e for i, e in enumerate(eps)})
    _checked(check_count, **{"attack.n_iter": node.get("n_iter", 1), "attack.restarts": node.get("restarts", 1)})
    chunk = node.get("chunk_size", "auto")
    if chunk != "auto":
        _checked(check_count, **{"attack.chunk_size": chunk})
    if node.get("loss", "ce") not in ("ce", "margin"):
        raise ConfigError(f"attack.loss must be 'ce' or 'margin', got {node.get('loss')!r}")


def check_config(cfg: DictConfig) -> None:
    """Every check of the run's config that needs no data module or model (those follow in
    :func:`stablenets.runner.config.build_objects`)."""
    check_missing(cfg)
    check_numbers(cfg)  # nan / inf in any numeric key
    check_settings(cfg)
    check_trainer(cfg)
    check_data_for_ranks(cfg)
    check_lipschitz(cfg.lipschitz)
    check_attack(cfg.get("attack"))


def _mem_available() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``; ``None`` where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


#: the largest integer setting of a model (a depth, width, channel count) taken at face value
MAX_MODEL_INT = 10**6
#: bytes per parameter while training: weight, gradient and two Adam moments in float32
TRAIN_BYTES_PER_PARAM = 16


def check_model_size(node: DictConfig, build_model, memory: int | None = None) -> int:
    """Count the parameters of the model the config describes, without allocating them (on the meta device,
    the power method's start skipped), and refuse one whose training state cannot fit in memory, naming
    the model's largest settings.  Returns the parameter count."""
    for key, value in OmegaConf.to_container(node, resolve=True).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and v > MAX_MODEL_INT:
                raise ConfigError(
                    f"model.{key}={value} is absurdly large (no layer count, width or channel count "
                    f"of a model here exceeds {MAX_MODEL_INT:,}); lower it"
                )
    try:  # on the meta device: no memory, no values (the layers skip what would read them)
        with torch.device("meta"):
            net = build_model()
    except Exception:  # a model that cannot be built on the meta device is checked by its real build
        return -1
    n = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    memory = _mem_available() if memory is None else memory
    if memory is not None and n * TRAIN_BYTES_PER_PARAM > memory:
        sizes = sorted(
            (
                (v, k)
                for k, v in OmegaConf.to_container(node, resolve=True).items()
                if isinstance(v, int) and not isinstance(v, bool)
            ),
            reverse=True,
        )
        keys = ", ".join(f"model.{k}={v}" for v, k in sizes[:3])
        raise ConfigError(
            f"the model ({node.get('_target_')}) has {n:.3g} parameters: training needs about "
            f"{n * TRAIN_BYTES_PER_PARAM / 2**30:.3g} GiB, this machine has {memory / 2**30:.3g} GiB "
            f"available. Its largest settings: {keys}; lower them"
        )
    return n
