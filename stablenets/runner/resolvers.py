"""OmegaConf resolvers used by the config files (registered when ``stablenets.runner`` is imported).

``${stablenets.run_name:${hydra:runtime.choices.experiment},${hydra:runtime.choices.model},${hydra:runtime.choices.data}}``
— a run's name: the preset's name (``experiment=fmnist_certified`` → ``fmnist_certified``), else
``<model>_<data>``; no preset repeats its own file name.

``${stablenets.gpus:${trainer.accelerator},${trainer.devices}}`` — the GPUs a SLURM job asks for: the
trainer's device count for a GPU run, none (null) for a CPU run, so CPU runs fit CPU partitions.
``${stablenets.cpus:${num_threads}}`` — the CPUs per SLURM task: the run's ``num_threads`` when it is a
number, else :data:`DEFAULT_CPUS`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")
DEFAULT_CPUS = 8


def run_name(experiment: str | None, model: str, data: str) -> str:
    """The preset's name (its last path part), else ``<model>_<data>``."""
    return str(experiment).rsplit("/", 1)[-1] if experiment else f"{model}_{data}"


def gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node: ``None`` unless ``accelerator`` is ``gpu`` or ``cuda``, then ``devices`` (a count >= 1)."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return None
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    raise ValueError(f"a SLURM GPU job needs trainer.devices to be a number of GPUs >= 1, got {devices!r}")


def cpus(num_threads: Any) -> int:
    """CPUs per task: ``num_threads`` when it is an integer >= 1 (the threads the run will use), else 8."""
    if isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads >= 1:
        return num_threads
    return DEFAULT_CPUS


def register() -> None:
    for name, fn in (("stablenets.run_name", run_name), ("stablenets.gpus", gpus), ("stablenets.cpus", cpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
