"""Command-line overrides: their keys, and which keys only say where or how a run executes.

:data:`ENVIRONMENT_KEYS` is the one list of keys that do not change what a run computes.  They neither
rename a recipe's study (:func:`stablenets.runner.sweeps.study_group`) nor name a sweep job's dir:
``conf/hydra/default.yaml`` lists the same keys in ``hydra.job.config.override_dirname.exclude_keys``
(a test checks that the two agree), so that re-running a sweep on a GPU, with more threads or with W&B
finds and resumes the same job dirs.
"""

from __future__ import annotations

#: keys (or config groups) that say where or how a run executes, not what it computes
ENVIRONMENT_KEYS = (
    "trainer",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.precision",
    "num_threads",
    "flush_denormal",
    "data.data_dir",
    "data.download",
    "logger",
    "resume",
    "progress",
)
#: keys of the same kind that name the sweep itself, or Hydra's own settings
SWEEP_KEYS = ("group",)


def override_key(override: str) -> str:
    """``model.depth`` of ``model.depth=4``, ``+model.depth=4``, ``~model.depth`` or ``++model.depth=4``."""
    return override.partition("=")[0].lstrip("+~")


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``{key: value}`` of a list of overrides (a later one wins)."""
    return {override_key(o): o.partition("=")[2] for o in overrides}


def override_value(overrides: list[str], key: str, default: str | None = None) -> str | None:
    """The value given for ``key`` among ``overrides`` (the last one), else ``default``."""
    return parse_overrides(overrides).get(key, default)


def is_hydra_key(key: str) -> bool:
    return key.startswith(("hydra.", "hydra/"))


def changes_study(override: str) -> bool:
    """Whether an override changes what is computed (not Hydra's settings, not the environment)."""
    key = override_key(override)
    return not is_hydra_key(key) and key not in ENVIRONMENT_KEYS and key not in SWEEP_KEYS


def hydra_quoted(value: str) -> str:
    """``value`` as one quoted Hydra string: paths and study names may hold spaces, ``,`` and ``=``, which an
    unquoted override value would parse as a sweep or reject."""
    return "'" + value.replace("'", "\\'") + "'"


def current_overrides() -> list[str]:
    """The task overrides of the Hydra job running now (``[]`` outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, AttributeError):
        return []
