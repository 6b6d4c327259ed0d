"""Reading what a run left on disk, and numbers no run can use, with one clear message each.

Every reader here raises :class:`~stablenets.runner.errors.ConfigError` naming the file (and what to do) instead of
the parser's own traceback: a truncated or corrupt checkpoint, a damaged saved config (``.hydra/*.yaml``,
``config.yaml``), a damaged ``results.json``.  Nothing is written: a damaged file is left as it is for the
user to inspect.  :func:`check_numbers` refuses ``nan``/``inf`` in any numeric config key and
:func:`check_model_size` a model too large for the machine's memory, both naming the key, before anything
is built.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError

#: what torch.load raises on a truncated or corrupt file (zip archive, legacy pickle, wrong magic)
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    ValueError,
    OSError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
)


def read_yaml(path: str | Path, expect: type | None = None) -> Any:
    """The YAML document at ``path`` (``None`` when empty), or a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is damaged (not valid YAML: {str(e).splitlines()[0]}); restore it from the run's "
            "other copy (.hydra/ or config.yaml) or re-run"
        ) from None
    if expect is not None and data is not None and not isinstance(data, expect):
        raise ConfigError(f"{path} is damaged: it holds a {type(data).__name__} where a {expect.__name__} belongs")
    return data


def read_json(path: str | Path) -> dict:
    """A ``results.json``-like object, or a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is damaged (not valid JSON: {e}); delete it to re-run, or re-evaluate the run"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ConfigError(f"{path} is damaged: it holds no 'metrics' table; delete it to re-run")
    return data


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict:
    """``torch.load`` of a checkpoint on the CPU, or a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except _LOAD_ERRORS as e:
        raise ConfigError(
            f"{path} is damaged (truncated or corrupt: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). "
            "Delete it to train from the start (a sweep relaunch then re-runs this job), or restore it "
            "from a copy"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{path} is damaged: it holds no 'state_dict' (not a checkpoint of this runner)")
    return ckpt


def check_checkpoint(path: str | Path) -> None:
    """Resume only from a checkpoint that loads: a damaged one is reported, never trained over."""
    load_checkpoint(path, weights_only=False)


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
    from ..nn.spectral import SpectralOperator

    for key, value in OmegaConf.to_container(node, resolve=True).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and v > MAX_MODEL_INT:
                raise ConfigError(
                    f"model.{key}={value} is absurdly large (no layer count, width or channel count "
                    f"of a model here exceeds {MAX_MODEL_INT:,}); lower it"
                )
    from ..nn.gradient_flow import GradientFlowBlock

    # the power method's start and the sub-step count read values: there are none on the meta device
    start, substeps = SpectralOperator._start_tracking, GradientFlowBlock.refresh_substeps
    SpectralOperator._start_tracking = lambda self: None
    GradientFlowBlock.refresh_substeps = lambda self, sigma=None: None
    try:
        with torch.device("meta"):
            net = build_model()
    except Exception:  # a model that cannot be built on the meta device is checked by its real build
        return -1
    finally:
        SpectralOperator._start_tracking, GradientFlowBlock.refresh_substeps = start, substeps
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
