"""``hydra/launcher=slurm``: the launcher of :mod:`stablenets.runner.slurm`, where Hydra looks for launchers."""

from stablenets.runner.slurm import CheckedSlurmLauncher


class SlurmLauncher(CheckedSlurmLauncher):
    """submitit's SLURM launcher, the request checked against the partition's nodes before submission and a job
    that dies without a result listed as failed (see :mod:`stablenets.runner.slurm`)."""
