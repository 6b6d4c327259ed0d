"""The SLURM launcher (``hydra/launcher=slurm``): submitit's, with a request that can start and a sweep that ends.

* **Before submission** the request of one job — ``cpus_per_task × tasks_per_node`` CPUs, ``mem_gb`` of
  memory, ``gpus_per_node`` GPUs — is compared with the nodes of its partition (``sinfo``; the default
  partition when none is set).  When no node could ever run it, SLURM would keep the array job
  ``PENDING (PartitionConfig)`` for ever; here the sweep stops instead, with one paragraph naming the
  request, the largest node and the overrides that fit it (exit code 2), and nothing is submitted.
* **While it waits**, a job that SLURM no longer lists (or lists as ended) without having written its
  result — killed for memory, its node lost, cancelled — is a failed job: its run dir gets an
  ``error.txt`` naming the SLURM state and the job's log (so ``stablenets-collect`` lists it), and the sweep
  ends once every job has either a result or such a verdict.  (Without SLURM accounting, submitit follows
  jobs by their result files only, and would wait for that job for ever.)  A requeued job (time limit,
  preemption) stays in the queue and is waited for as before.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from .run_dir import RunDir

log = logging.getLogger(__name__)

#: states of a job that is over (``squeue`` lists them for ``MinJobAge`` after the end)
ENDED = (
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
)
#: seconds a job may be gone from the queue before its missing result counts (a shared filesystem's delay)
RESULT_GRACE_S = 20.0


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


def parse_gres_gpus(gres: str) -> int:
    """GPUs in an ``sinfo %G`` field, e.g. ``gpu:a100:4(S:0-1),shard:8`` -> 4; ``(null)`` -> 0."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def partition_nodes(partition: str | None) -> tuple[str, list[Node]] | None:
    """``(partition, nodes)`` from ``sinfo`` (the default partition when ``partition`` is None); ``None``
    when ``sinfo`` cannot tell (not installed, not answering)."""
    try:
        cmd = ["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"]
        out = subprocess.run(cmd + (["-p", partition] if partition else []), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    nodes, default = {}, None
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, part, cpus, mem, gres = fields
        if part.endswith("*"):
            default = part.rstrip("*")
        if partition is None and not part.endswith("*"):
            continue
        try:
            nodes[name] = Node(name, int(cpus.rstrip("+")), int(mem.rstrip("+")), parse_gres_gpus(gres))
        except ValueError:
            continue
    return (partition or default or "(default)"), list(nodes.values())


def check_request(params: dict[str, Any], nodes_of=partition_nodes) -> str | None:
    """The paragraph that refuses a request no node of its partition can run, or ``None`` when one can (or
    when ``sinfo`` cannot tell)."""
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = int(params.get("cpus_per_task") or 1) * tasks
    mem_gb = params.get("mem_gb")
    gpus = int(params.get("gpus_per_node") or 0)
    found = nodes_of(params.get("partition"))
    if found is None:
        return None
    partition, nodes = found
    if not nodes:
        return (
            f"the SLURM partition {partition!r} has no nodes (sinfo lists none): choose another with "
            "hydra.launcher.partition=<name> (sinfo lists them)."
        )
    mem_mb = None if mem_gb is None else float(mem_gb) * 1024

    def fits(n: Node) -> bool:
        return n.cpus >= cpus and (mem_mb is None or n.mem_mb >= mem_mb) and n.gpus >= gpus

    if any(fits(n) for n in nodes):
        return None
    big = max(nodes, key=lambda n: (n.gpus >= gpus, n.cpus, n.mem_mb, n.gpus))
    fix = []
    if big.cpus < cpus:
        fix.append(f"hydra.launcher.cpus_per_task={max(1, big.cpus // tasks)}")
    if mem_mb is not None and big.mem_mb < mem_mb:
        fix.append(f"hydra.launcher.mem_gb={max(1, int(big.mem_mb * 0.9 / 1024))}")
    if big.gpus < gpus:
        fix.append("trainer=cpu (no GPU)" if big.gpus == 0 else f"trainer.devices={big.gpus}")
    request = (
        f"{cpus} CPUs (cpus_per_task={params.get('cpus_per_task')} x tasks_per_node={tasks}), "
        f"{'no memory limit' if mem_gb is None else f'{mem_gb} GB of memory'} and {gpus} GPUs per job"
    )
    node = f"{big.cpus} CPUs, {big.mem_mb / 1024:.1f} GB and {big.gpus} GPUs"
    return (
        f"the SLURM request can never start: each job asks for {request}, but the largest node of partition "
        f"{partition!r} ({big.name}) has {node}, so SLURM would keep the jobs pending (PartitionConfig) for "
        f"ever. Nothing was submitted. Size the jobs to the node, e.g. {' '.join(fix)}, or choose another "
        "partition with hydra.launcher.partition=<name>."
    )


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{job id: state}`` of the given jobs as ``squeue`` lists them (array tasks as ``<id>_<task>``);
    ``None`` when ``squeue`` does not answer (then nothing is concluded)."""
    base = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(base)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            states[jid] = state
    return states


class CheckedSlurmLauncher(SubmititSlurmLauncher):
    """submitit's SLURM launcher with the request checked before submission and dead jobs detected."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        problem = check_request(self.params)
        if problem:
            print(f"stablenets: error: {problem}", file=sys.stderr)
            sys.exit(2)
        # as submitit's launcher (hydra_submitit_launcher), up to the wait; a relative submitit_folder is under
        # the sweep dir (read here: when the launcher is built, a sweep dir named by ${hydra:...} cannot resolve)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        folder = Path(str(self.params["submitit_folder"]))
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=folder if folder.is_absolute() else sweep_dir / folder,
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]},
        )
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except (submitit.core.utils.FailedJobError, OSError) as e:  # sbatch refused the array: nothing was queued
            reason = " ".join(str(e).split())
            print(
                f"stablenets: error: SLURM refused the submission ({reason}). Nothing was queued; check the "
                "hydra.launcher settings (partition, account, qos, additional_parameters).",
                file=sys.stderr,
            )
            sys.exit(2)
        return self.wait(jobs, [list(o) for o in job_overrides])

    def run_dir(self, overrides: list[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def wait(self, jobs, overrides: list[list[str]], poll_s: float = 2.0) -> list[JobReturn]:
        """Each job's return, once every job has a result file or has left the queue without one."""
        returns: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        while len(returns) < len(jobs):
            todo = [i for i in range(len(jobs)) if i not in returns]
            states = queue_states([jobs[i].job_id for i in todo])
            for i in todo:
                job = jobs[i]
                if job.paths.result_pickle.exists():
                    returns[i] = self._outcome(job)
                    continue
                if states is None:
                    continue
                state = states.get(job.job_id, "").split()[0] if states.get(job.job_id) else ""
                if state and state not in ENDED:
                    gone_since.pop(i, None)
                    continue
                first = gone_since.setdefault(i, time.time())
                if time.time() - first >= RESULT_GRACE_S and not job.paths.result_pickle.exists():
                    returns[i] = self._died(job, overrides[i], state or "no longer in the queue")
            if len(returns) < len(jobs):
                time.sleep(poll_s)
        return [returns[i] for i in range(len(jobs))]

    @staticmethod
    def _outcome(job) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as e:  # the job raised: Hydra reports it as the first failure of the sweep
            ret = JobReturn()
            ret.status, ret._return_value = JobStatus.FAILED, e
            return ret

    def _died(self, job, overrides: list[str], state: str) -> JobReturn:
        logs = f"{job.paths.stdout} / {job.paths.stderr}"
        msg = (
            f"SLURM job {job.job_id} ended without a result (state: {state}) — killed for memory or time, its "
            f"node lost or the job cancelled; its log: {logs}"
        )
        try:
            run = RunDir(self.run_dir(overrides))
            run.path.mkdir(parents=True, exist_ok=True)
            if not run.results.exists():
                run.error.write_text(msg + "\n")
        except Exception as e:  # the verdict stands without the file
            log.warning(f"could not write error.txt for job {job.job_id}: {e}")
        print(f"stablenets: {msg}", file=sys.stderr, flush=True)
        ret = JobReturn(overrides=overrides)
        ret.status, ret._return_value = JobStatus.FAILED, RuntimeError(msg)
        return ret
