"""Hydra callbacks of the runner (``hydra.callbacks`` in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepConfig(Callback):
    """Makes the multirun's config the current Hydra config before the sweeper and launcher are built.

    Hydra sets it only per job, yet its sweeper reads ``hydra.sweep.dir`` (and a launcher its
    ``submitit_folder``) before: a sweep dir named by ``${hydra:...}`` — ``outputs/sweeps/${group}``, ``group``
    defaulting to ``name`` = ``${hydra:runtime.choices.model}_...`` — would not resolve, and
    ``stablenets-train -m`` without ``group=`` would stop with an interpolation error."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)
