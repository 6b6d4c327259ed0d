"""Launching a study's multirun from a recipe in ``experiments/``: the recipe's overrides, the user's on top.

A recipe fixes what defines its study (presets, the swept values) and some defaults (launcher, threads);
the user's overrides replace any of those by key.  Overrides that change the study itself (not merely
where or how it runs: :data:`stablenets.runner.overrides.ENVIRONMENT_KEYS`) also name it:
``experiments/inverse_problem.py data.n_train=20`` writes to ``outputs/sweeps/inverse__data.n_train=20``,
never into the default study's dir.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .overrides import changes_study, hydra_quoted, override_key


def merge_overrides(recipe: list[str], user: list[str]) -> list[str]:
    """The recipe's overrides with those the user gives again (same key) replaced by the user's."""
    given = {override_key(o) for o in user}
    return [o for o in recipe if override_key(o) not in given] + list(user)


def study_group(group: str, user: list[str]) -> str:
    """``group``, suffixed with the user's overrides that change the study (sorted, so order does not matter)."""
    changes = sorted(o.lstrip("+~") for o in user if changes_study(o))
    return group if not changes else f"{group}__{','.join(changes)}".replace("/", "_")


def launch_sweep(recipe: list[str], user: list[str], group: str, root: str | Path = "outputs/sweeps") -> Path:
    """Run ``stablenets-train -m <recipe + user overrides> group=<study group>``; return its sweep dir.

    A sweep relaunched with the same overrides skips its finished runs and resumes unfinished ones; the
    return code is not fatal (failed jobs are listed by :func:`stablenets.collect.read_sweep`).
    """
    group = study_group(group, user)
    sweep = Path(root) / group
    cmd = [
        sys.executable,
        "-m",
        "stablenets.train",
        "-m",
        *merge_overrides(recipe, user),
        f"group={hydra_quoted(group)}",
        f"hydra.sweep.dir={hydra_quoted(str(sweep))}",
    ]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode:
        print(f"stablenets: the sweep exited with {proc.returncode}; see the failed runs below", flush=True)
    return sweep


class SweepConfig(Callback):
    """Makes the multirun's config the current Hydra config before the sweeper and launcher are built.

    Hydra sets it only per job, yet its sweeper reads ``hydra.sweep.dir`` (and a launcher its
    ``submitit_folder``) before: a sweep dir named by ``${hydra:...}`` — ``outputs/sweeps/${group}``, ``group``
    defaulting to ``name`` = ``${hydra:runtime.choices.model}_...`` — would not resolve, and
    ``stablenets-train -m`` without ``group=`` would stop with an interpolation error."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)
