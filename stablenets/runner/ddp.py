"""DDP on one machine, launched by the runner itself, and checks that DDP replicas agree.

Lightning's own launcher for ``strategy=ddp`` re-executes ``sys.argv`` once per extra process.  Under
Hydra that re-runs the command line — with ``-m``, the whole sweep, in every process.  So the runner
launches the extra processes itself, as ``torchrun`` would: it writes the job's resolved config to
``<run dir>/.ddp/config.yaml`` and starts ``python -m stablenets.runner.rank_worker <that file>`` once per extra
rank, with ``LOCAL_RANK``/``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; Lightning then sees
processes created externally and joins them.  This works the same for a single run, for each job of a
multirun and from the Python API.  Under SLURM (``SLURM_NTASKS > 1``: one task per device, as the SLURM
launcher config asks for) or ``torchrun`` the processes already exist and nothing is launched.

Only rank 0 evaluates and writes files; the other ranks end after testing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_externally() -> bool:
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def local_processes(trainer_cfg: DictConfig) -> int:
    """How many processes a DDP run of ``trainer_cfg`` needs on this machine (1: no launch needed)."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if "ddp" not in strategy or "spawn" in strategy or int(trainer_cfg.get("num_nodes", 1)) != 1:
        return 1
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if devices in (-1, "auto", "-1"):
        gpu = str(trainer_cfg.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    return int(devices)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ddp(cfg: DictConfig, out: Path) -> Iterator[None]:
    """Start the extra ranks of a local DDP run (if any) and make this process rank 0 for the duration."""
    n = local_processes(cfg.trainer)
    if n <= 1 or launched_externally():
        yield
        return
    path = out / ".ddp" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    common = {"WORLD_SIZE": str(n), "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stablenets.runner.rank_worker", str(path)],
            env={**os.environ, **common, "LOCAL_RANK": str(r), "RANK": str(r)},
        )
        for r in range(1, n)
    ]
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(common, LOCAL_RANK="0", RANK="0")
    watcher = _Watcher(procs)
    watcher.start()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        watcher.stop()
        for p in procs:
            try:
                p.wait(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # the next job of a multirun starts its own group


class _Watcher(threading.Thread):
    """A rank that dies leaves the others waiting in a collective: end this process too."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        super().__init__(daemon=True)
        self.procs, self._done = procs, threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            failed = [p for p in self.procs if p.poll() not in (None, 0)]
            if failed:
                print(
                    f"stablenets: DDP rank process {failed[0].pid} exited with {failed[0].returncode}; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()


@torch.no_grad()
def replica_max_diff(module: torch.nn.Module) -> float:
    """Largest difference between any parameter or buffer and rank 0's copy, over all ranks (0 when alone)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=next(module.parameters()).device)
    for t in module.state_dict().values():
        if not torch.is_tensor(t) or not t.is_floating_point():
            continue
        ref = t.clone()
        torch.distributed.broadcast(ref, src=0)
        worst = torch.maximum(worst, (t - ref).abs().max().double())
    torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
    return float(worst)
