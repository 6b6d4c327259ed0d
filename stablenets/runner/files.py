"""Reading and writing what a run leaves on disk, with one clear message per damaged file.

Every reader raises :class:`~stablenets.runner.errors.ConfigError` naming the file (and what to do) instead of the
parser's own traceback: a truncated or corrupt checkpoint, a damaged saved config (``.hydra/*.yaml``,
``config.yaml``), a damaged ``results.json``.  A reader writes nothing: a damaged file is left as it is for the
user to inspect.  :func:`write_json` writes atomically: a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

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


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


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


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, dtypes, shapes and values: the same weights give the same string."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        if not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
