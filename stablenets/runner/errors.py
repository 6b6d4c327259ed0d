"""The errors the entry points turn into a one-paragraph message and an exit code (never a traceback)."""

from __future__ import annotations

from ..checks import TrainingDiverged
from ..data.base import DataError


class ConfigError(ValueError):
    """Bad user input: an invalid config value, a missing data set with no way to get it, ... (exit code 2)."""


class CertificateError(RuntimeError):
    """The certificate audit found an adversarial example inside a certified radius: a bound is wrong (exit 3)."""


#: what the user can fix: reported in one paragraph with exit code 2
USER_ERRORS = (ConfigError, DataError, TrainingDiverged)


def exit_code(error: BaseException) -> int:
    """2 for bad input, 3 for a broken certificate."""
    return 3 if isinstance(error, CertificateError) else 2
