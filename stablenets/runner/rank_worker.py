"""A DDP rank > 0 of a run the runner launched itself (see :mod:`stablenets.runner.ddp`).

``python -m stablenets.runner.rank_worker <run dir>/.ddp/config.yaml`` trains the run described by the
resolved config rank 0 wrote, joining rank 0's process group, and ends when rank 0 is gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from omegaconf import OmegaConf


def _exit_with_parent(period_s: float = 1.0) -> None:
    """End this rank when the process that launched it (rank 0) is gone — killed, say, by the OOM killer —
    instead of waiting in a collective until the process group's time-out (30 min)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        print(
            f"stablenets: DDP rank {os.environ.get('RANK')}: rank 0 (pid {parent}) is gone; stopping",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    """Train the run described by the config file (written by rank 0) as the rank the environment names."""
    from ..train import train

    _exit_with_parent()
    train(OmegaConf.load(sys.argv[1]))


if __name__ == "__main__":
    main()
