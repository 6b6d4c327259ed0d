"""A run's output dir: its layout, its status, and the rule that a run dir holds one run.

Layout (every reader and writer goes through :class:`RunDir`):

* ``config.yaml`` — the resolved config; ``.hydra/{config,hydra,overrides}.yaml`` — the composed config, Hydra's
  node and the command-line overrides (``stablenets-eval`` re-composes from them; ``stablenets-collect`` finds
  job dirs by them).  Written by the runner, only once the launch is known to be this dir's run;
* ``results.json`` — written last and atomically, with the run's ``fingerprint``: a hash of the config (the
  keys that say what is computed, not where) and of the checkpoint's weights;
* ``error.txt`` — the traceback of a failed run (a run whose certificate audit failed has both files: failed);
* ``checkpoints/last.ckpt`` (and Lightning's SLURM ``hpc_ckpt_*.ckpt``) — :meth:`RunDir.latest_checkpoint`;
* ``eval/<time>/`` (``stablenets-eval``), ``export/`` (``stablenets-export``), the loggers' files, the report;
* ``.lock`` — held (``flock``) by the process that writes the run; the kernel releases it when that process
  ends, however it ends, so a killed run never leaves it stuck.

:meth:`RunDir.status` is the one judgement of a run's state — ``finished``, ``failed``, ``unfinished`` or
``damaged`` — used by the training entry point, ``stablenets-eval``, ``stablenets-export``, ``stablenets-collect``
and the SLURM launcher.  Under DDP only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .files import read_json, read_yaml, write_json
from .overrides import ENVIRONMENT_KEYS, SWEEP_KEYS

RESULTS = "results.json"
ERROR = "error.txt"
CONFIG = "config.yaml"
HYDRA = ".hydra"
OVERRIDES = f"{HYDRA}/overrides.yaml"
CHECKPOINT = "checkpoints/last.ckpt"
LOCK = ".lock"
STATES = ("finished", "failed", "unfinished", "damaged")

#: config keys that say where or how a run executes (or name it), left out of its fingerprint, so that a run
#: resumed on another device, with more threads, another logger or a moved dir is the same run
_TRAINER_ENV = (
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "precision",
    "sync_batchnorm",
    "default_root_dir",
    "enable_progress_bar",
    "enable_model_summary",
)
IGNORED_KEYS = (
    tuple(k for k in ENVIRONMENT_KEYS if k != "trainer")
    + SWEEP_KEYS
    + tuple(f"trainer.{k}" for k in _TRAINER_ENV)
    + ("name", "paths", "optimized_metric", "hydra")
)


class RunDirError(ConfigError):
    """A launch refused because the dir is another run's, or in use: nothing in the dir is touched."""


def run_id(output_dir: str | Path) -> str:
    """Deterministic id of a run dir (W&B run id: a resumed run continues the same W&B run)."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


def _defining(config: dict) -> dict:
    """The keys of a resolved config that define what a run computes: :data:`IGNORED_KEYS` dropped, and the run
    dir's own path (``paths.output_dir``) replaced by a placeholder wherever it appears in a value (a moved run
    dir is the same run)."""
    run_path = str((config.get("paths") or {}).get("output_dir") or "") or None

    def clean(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: clean(v, f"{prefix}{k}.") for k, v in node.items() if f"{prefix}{k}" not in IGNORED_KEYS}
        if isinstance(node, list):
            return [clean(v, prefix) for v in node]
        if isinstance(node, str) and run_path:
            return node.replace(run_path, "<run>")
        return node

    return clean(config, "")


def config_fingerprint(config: dict) -> str:
    """Hash of the keys of a resolved config that define the run (see :func:`_defining`)."""
    text = json.dumps(_defining(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolved(cfg: DictConfig) -> dict:
    """The resolved config as ``config.yaml`` holds it (through YAML, so that both hash alike)."""
    return yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True)) or {}


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


@dataclass(frozen=True)
class Status:
    """``state``: one of :data:`STATES`; ``reason``: why (the error's last line, the damaged file)."""

    state: str
    reason: str = ""


class RunDir:
    """The output dir of one run; ``writer`` is whether this process writes files (rank 0)."""

    def __init__(self, path: str | Path, writer: bool = True) -> None:
        self.path, self.writer = Path(path), writer
        self._lock_fd: int | None = None

    # -- layout --------------------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def error(self) -> Path:
        return self.path / ERROR

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def overrides(self) -> Path:
        return self.path / OVERRIDES

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def id(self) -> str:
        return run_id(self.path)

    def is_run(self) -> bool:
        """Whether the dir was written by a launch (it holds its overrides or config)."""
        return self.overrides.is_file() or self.config.is_file()

    def latest_checkpoint(self) -> Path | None:
        """The newest of ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` (saved on preemption)."""
        cands = [p for p in [self.checkpoint, *self.path.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
        return max(cands, key=lambda p: p.stat().st_mtime) if cands else None

    # -- status --------------------------------------------------------------------------------------------
    def saved_config(self) -> dict:
        """``config.yaml`` (resolved), or a :class:`ConfigError` naming the damaged file."""
        return read_yaml(self.config, dict) or {}

    def saved_results(self) -> dict[str, Any]:
        """``results.json`` (a damaged one is reported, naming the file)."""
        return read_json(self.results)

    def fingerprint(self) -> str | None:
        """The fingerprint of ``config.yaml`` (None without one)."""
        return config_fingerprint(self.saved_config()) if self.config.is_file() else None

    def check_results_belong(self, results: dict) -> None:
        """Raise :class:`ConfigError` when ``results.json`` was written for another config than ``config.yaml``."""
        recorded = (results.get("fingerprint") or {}).get("config")
        if recorded is None or not self.config.is_file():
            return  # a run written before fingerprints were recorded
        if self.fingerprint() != recorded:
            raise ConfigError(
                f"{self.results} does not belong to this run: it was written for another config than {self.config} "
                "(a results.json copied or left from another run). Delete it to re-run, or restore the run's own"
            )

    def status(self) -> Status:
        """``finished`` (results, no error), ``failed`` (``error.txt``, also beside results: e.g. a failed
        certificate audit), ``unfinished`` (neither yet), ``damaged`` (a file of the run cannot be read, or its
        results belong to another config)."""
        try:
            if self.overrides.is_file():
                read_yaml(self.overrides, list)
            results = self.saved_results() if self.results.is_file() else None
            if results is not None:
                self.check_results_belong(results)
        except ConfigError as e:
            return Status("damaged", str(e))
        if self.error.is_file():
            lines = [ln for ln in self.error.read_text(errors="replace").strip().splitlines() if ln.strip()]
            return Status("failed", lines[-1] if lines else "unknown error")
        if results is not None:
            return Status("finished")
        return Status("unfinished")

    def finished(self) -> bool:
        return self.status().state == "finished"

    def finished_results(self) -> dict[str, Any]:
        """``results.json`` of a finished run, or a :class:`ConfigError` saying what the run is instead (for the
        tools that read a run: ``stablenets-eval``, ``stablenets-export``)."""
        if not self.is_run():
            raise ConfigError(f"{self.path} is not a run dir: {self.overrides} is missing")
        status = self.status()
        if status.state != "finished":
            what = {"failed": "failed", "unfinished": "is not finished", "damaged": "is damaged"}[status.state]
            raise ConfigError(
                f"{self.path} {what}"
                + (f": {status.reason}" if status.reason else "")
                + " — only a finished run can be read"
            )
        return self.saved_results()

    # -- one run per dir -------------------------------------------------------------------------------------
    def check_launch(self, cfg: DictConfig) -> None:
        """Refuse to launch ``cfg`` into a dir that holds another config's run (a checkpoint or results next to a
        ``config.yaml`` that differs in a key that defines the run), before anything is written."""
        if not self.config.is_file() or (self.latest_checkpoint() is None and not self.results.is_file()):
            return  # a new dir, or a launch that stopped before training: nothing to keep
        saved, new = self.saved_config(), resolved(cfg)
        if config_fingerprint(saved) == config_fingerprint(new):
            return
        keys = differing_keys(_defining(saved), _defining(new))
        shown = ", ".join(keys[:6]) + (f" (and {len(keys) - 6} more)" if len(keys) > 6 else "")
        raise RunDirError(
            f"{self.path} holds a run of another config (it differs in {shown}); a run dir is one run. Launch into "
            "another dir, or delete this one to start over (its files are left as they are)"
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``.lock`` while writing the run: a second process launching into the same dir is refused."""
        if not self.writer:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(
                f"{self.path} is being written by another process (pid {holder}); two runs never share a dir. "
                "Wait for it, or launch into another dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- writing ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the dir and clear an earlier failure's ``error.txt``."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            self.error.unlink(missing_ok=True)

    def save_hydra(self, cfg: DictConfig, hydra_cfg: DictConfig | None) -> None:
        """``.hydra/{config,hydra,overrides}.yaml``: the composed config, Hydra's node, the overrides (none
        without Hydra's node: a config composed elsewhere)."""
        if not self.writer or hydra_cfg is None:
            return
        (self.path / HYDRA).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, self.path / HYDRA / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), self.path / HYDRA / "hydra.yaml")
        OmegaConf.save(hydra_cfg.overrides.task, self.overrides)

    def save_config(self, cfg: DictConfig) -> None:
        """``config.yaml``: the resolved config."""
        if self.writer:
            self.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def write_results(self, results: dict[str, Any]) -> None:
        if self.writer:
            write_json(self.results, results)

    def fail(self, error: BaseException) -> None:
        """Record a failure (the current traceback) so that a sweep lists the run; a ``SystemExit`` — a SLURM
        job leaving to be requeued after a time-out or preemption — is unfinished, not failed, and a refused
        launch (:class:`RunDirError`) leaves the dir as it was."""
        if self.writer and not isinstance(error, (SystemExit, RunDirError)):
            self.path.mkdir(parents=True, exist_ok=True)
            self.error.write_text(traceback.format_exc())
