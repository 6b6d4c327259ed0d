"""Argument checks shared by every constructor and by the runner's config checks.

Each raises ``ValueError`` naming the first offending value (the keyword it was given under, e.g.
``depth`` or ``lipschitz.L``); ``None`` means "not set" and passes.  The runner reports these errors
against the config group they came from, before any work starts.
"""

from __future__ import annotations

import math
from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(**values: float | None) -> None:
    """Every value that is set is a finite number > 0 (a width of a step, a learning rate, a bound)."""
    for name, value in values.items():
        if value is not None and not (_number(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(**values: float | None) -> None:
    """Every value that is set is a finite number >= 0 (a margin, a noise level, a radius ε)."""
    for name, value in values.items():
        if value is not None and not (_number(value) and value >= 0):
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_count(minimum: int = 1, **values: int | None) -> None:
    """Every value that is set is an integer >= ``minimum`` (a depth, a width, a number of samples)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class TrainingDiverged(ValueError):
    """Training left the range where its numbers mean anything: non-finite weights or losses, or an operator norm
    that asks for an absurd number of sub-steps.  Reported like bad input (a lower learning rate, a norm cap),
    naming what was found, never as a traceback from deep inside."""
