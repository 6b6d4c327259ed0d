"""Progress of a long loop outside the trainer (the robustness curve, AutoAttack): a bar on a terminal, a
line with an ETA at most every ``every`` seconds otherwise, or nothing.

``auto`` picks ``bar`` when standard output is a terminal and ``lines`` otherwise; the runner's progress
reporting (``stablenets.runner.progress``) uses the same modes.
"""

from __future__ import annotations

import sys
import time

MODES = ("auto", "bar", "lines", "none")


def resolve(mode: str | None) -> str:
    mode = "auto" if mode is None else str(mode)
    if mode not in MODES:
        raise ValueError(f"progress must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "lines"
    return mode


class LoopProgress:
    """Progress of a loop outside the trainer (the robustness curve): ``update(done, total)``."""

    def __init__(self, label: str, mode: str = "auto", every: float = 10.0) -> None:
        self.label, self.mode, self.every = label, resolve(mode), every
        self._bar = None
        self._start = self._last = time.perf_counter()

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.mode == "bar":
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=self.label, unit="pair", leave=False)
            self._bar.n = done
            self._bar.refresh()
        elif self.mode == "lines" and (
            now - self._last >= self.every or (done >= total and now - self._start >= self.every)
        ):
            self._last = now
            eta = (now - self._start) / max(done, 1) * (total - done)
            print(
                f"stablenets: {self.label} {done}/{total} ({done / max(total, 1):.0%}), "
                f"{now - self._start:.0f} s, about {eta:.0f} s left",
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
