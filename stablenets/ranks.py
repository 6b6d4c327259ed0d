"""Which process of a distributed run this is — the one place that answers it.

:func:`process_group` is this process's place in the initialised ``torch.distributed`` group (what data
sharding and collectives need); before the group exists (or without one), :func:`global_rank` falls back
to what the launcher set (``RANK`` by torchrun and the runner's own DDP launch, ``SLURM_PROCID`` by srun).
"""

from __future__ import annotations

import os

import torch

LAUNCHER_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK")


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` in the initialised process group; ``(0, 1)`` when there is none."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return process_group()[1] > 1


def global_rank() -> int:
    """This process's global rank: the process group's, else the launcher's variables, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    for key in LAUNCHER_RANK_VARS:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0
