"""The SLURM launcher against a real SLURM (``bash scripts/slurm_single_node.sh`` starts a one-node cluster):
an array sweep, a job that times out and is requeued and resumed with nothing lost, a failing job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from problems import TINY, cli
from stablenets.collect import read_sweep

SETUP = "bash scripts/slurm_single_node.sh"
# one CPU and 1 GB per job: two jobs at once on a 2-core node
SMALL_JOB = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


@pytest.fixture(scope="session")
def slurm() -> dict:
    """The cluster's default partition, once ``sinfo`` shows a node that can take jobs."""
    if shutil.which("sbatch") is None:
        pytest.skip(f"no SLURM on this machine (sbatch not found); `{SETUP}` (as root) sets up a one-node cluster")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %t %c"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sinfo does not answer: is slurmctld running? `{SETUP}` starts it")
    if out.returncode:
        pytest.fail(f"sinfo failed ({out.stderr.strip()}): `{SETUP}` starts the cluster")
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    ready = [p for p, state, _ in rows if p.endswith("*") and state in ("idle", "mix", "alloc", "comp")]
    if not ready:
        pytest.fail(f"no default partition with a node up: sinfo says {out.stdout.strip()!r}; `{SETUP}` fixes it")
    return {"partition": ready[0].rstrip("*")}


def job_ids(sweep: Path) -> list[str]:
    """SLURM ids of a sweep's jobs (submitit's folders: ``<id>`` or, for an array, ``<id>_<task>``)."""
    return sorted({p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()})


def wait_until_gone(ids: list[str], timeout: float = 120) -> None:
    """A sweep whose first job fails returns while the others still run: wait until SLURM lists none."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i %T", "-j", ",".join(i.split("_")[0] for i in ids)],
            capture_output=True,
            text=True,
        )
        if not [line for line in out.stdout.splitlines() if not line.split()[-1].startswith("COMPLET")]:
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs {ids} still queued after {timeout}s")


def submission(sweep: Path) -> str:
    (script,) = list((sweep / ".submitit").glob("*/*_submission.sh"))
    return script.read_text()


def test_array_sweep_runs_on_cpu_partition(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    t0 = time.time()
    proc = cli(
        tmp_path,
        "-m",
        *TINY,
        "seed=0,1",
        *SMALL_JOB,
        f"hydra.launcher.partition={slurm['partition']}",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs, curves = read_sweep(sweep)
    assert sorted(runs.seed) == ["0", "1"] and (runs.status == "finished").all(), runs
    assert curves.groupby("run_dir").size().tolist() == [3, 3]
    script = submission(sweep)
    assert "#SBATCH --array=0-1" in script and f"#SBATCH --partition={slurm['partition']}" in script
    assert "#SBATCH --cpus-per-task=1" in script
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert not [line for line in sbatch if "gpu" in line or "gres" in line], sbatch  # a CPU run asks for no GPU
    print(f"2-job SLURM sweep: {time.time() - t0:.1f}s")


def test_failing_job_is_listed_and_its_sibling_finishes(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    proc = cli(tmp_path, "-m", *TINY, "model.depth=1,0", *SMALL_JOB, f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0
    wait_until_gone(job_ids(sweep))
    runs, _ = read_sweep(sweep)
    assert dict(zip(runs["model.depth"], runs.status)) == {"1": "finished", "0": "failed"}
    assert "depth must be an integer >= 1" in runs.set_index("model.depth").loc["0", "error"]


def test_request_no_node_can_run_is_refused_before_submission(tmp_path, slurm):
    """The launcher's defaults (8 CPUs with num_threads=auto, 32 GB) on a small node: one paragraph, exit 2, no job."""
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True).stdout.split()
    cpus, mem_mb = int(nodes[0]), int(nodes[1])
    # the defaults (8 CPUs, 32 GB) on a small node; on a node that could run them, one CPU more than it has
    too_big = [] if cpus < 8 or mem_mb < 32 * 1024 else [f"hydra.launcher.cpus_per_task={cpus + 1}"]
    sweep = tmp_path / "outputs" / "sweeps" / "nonexpansive_swiss_roll"  # the default, named by ${hydra:...}
    t0 = time.time()
    proc = cli(
        tmp_path,
        "-m",
        *TINY,
        "seed=0,1",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm['partition']}",
        *too_big,
    )
    assert proc.returncode == 2 and time.time() - t0 < 60, proc.stderr[-3000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in [
        "can never start",
        "8 CPUs",
        "32 GB",
        f"{cpus} CPUs",
        "Nothing was submitted",
        f"hydra.launcher.cpus_per_task={cpus}",
        "hydra.launcher.mem_gb=",
    ]:
        assert needle in err, err
    assert not (sweep / ".submitit").exists()
    # the CPUs follow num_threads: with num_threads=1 only the memory is named
    proc = cli(tmp_path, "-m", *TINY, "num_threads=1", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2 and "1 CPUs" in proc.stderr and "cpus_per_task=" not in proc.stderr.split("e.g.")[1]


def test_job_killed_without_a_result_is_listed_failed_and_the_sweep_ends(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    t0 = time.time()
    proc = cli(
        tmp_path,
        "-m",
        *TINY,
        "+callbacks.die._target_=problems.Die",
        "+callbacks.die.kill=true,false",
        *SMALL_JOB,
        f"hydra.sweep.dir={sweep}",
    )
    wall = time.time() - t0
    assert proc.returncode != 0 and wall < 300
    assert "ended without a result" in proc.stderr
    runs, _ = read_sweep(sweep)
    runs["kill"] = runs["callbacks.die.kill"].astype(str).str.lower()
    assert dict(zip(runs.kill, runs.status)) == {"true": "failed", "false": "finished"}, runs
    assert "ended without a result" in runs.set_index("kill").loc["true", "error"]
    print(f"sweep with a killed job ended after {wall:.1f}s")


# SLURM checks time limits every 30 s: a job with a 1 min limit and USR2 15 s before it gets the signal 15-45 s
# after it starts, after its first checkpoint and at least 30 s before SLURM would kill it.  The run takes
# ~50 s of wall-clock time, mostly sleeping (Pace), so that it outlasts a segment on any machine and the
# uninterrupted reference runs alongside at no cost.
EPOCHS = 22
RUN = [
    "model=nonexpansive",
    "model.depth=1",
    "model.width=4",
    "data.n_train=2000",
    "data.n_val=50",
    "data.n_test=50",
    f"trainer.max_epochs={EPOCHS}",
    "logger=csv",
    "seed=5",
    "callbacks=[default,jacobian_norm]",
]
PACE = ["+callbacks.pace._target_=problems.Pace", "+callbacks.pace.seconds_per_step=0.06"]  # ~2 s per epoch
STAMP = re.compile(r"submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - (.*)")


def _submitit_events(sweep: Path, pattern: str) -> list[float]:
    times = []
    for log in (sweep / ".submitit").glob("*/*_log.*"):
        for m in STAMP.finditer(log.read_text()):
            if pattern in m.group(2):
                times.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return sorted(set(times))


def _epoch_rows(csv: Path) -> pd.DataFrame:
    log = pd.read_csv(csv)
    return log[log["val/loss"].notna() & log.epoch.notna()].set_index("epoch")  # not the summary row


@pytest.mark.slow  # waits out a 1-minute SLURM time limit and a requeue: ~2 minutes of a worker
def test_timed_out_job_is_requeued_and_resumes_with_its_whole_history(tmp_path, slurm):
    ref_dir, sweep = tmp_path / "ref", tmp_path / "sweep"
    reference = cli(tmp_path, "-m", *RUN, f"hydra.sweep.dir={ref_dir}", background=True)  # uninterrupted, alongside
    t0 = time.time()
    proc = cli(
        tmp_path,
        "-m",
        *RUN,
        *PACE,
        *SMALL_JOB,
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=15",
        "hydra.launcher.max_num_timeout=4",
        f"hydra.sweep.dir={sweep}",
        background=True,
    )
    first_seen: dict[int, float] = {}  # epoch -> when its validation row appeared in metrics.csv
    try:
        while proc.poll() is None and time.time() - t0 < 300:
            for csv in sweep.glob("*/csv/metrics.csv"):
                try:
                    for epoch in _epoch_rows(csv).index:
                        first_seen.setdefault(int(epoch), time.time())
                except (pd.errors.EmptyDataError, KeyError, ValueError, OSError):
                    pass  # read while a row was being written
            time.sleep(0.2)
        wall = time.time() - t0
        assert proc.wait(timeout=1) == 0, "the SLURM sweep failed or ran past 5 minutes"
        assert reference.wait(timeout=300) == 0
    finally:  # leave no job or process behind
        for p in (proc, reference):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        if (sweep / ".submitit").is_dir():
            subprocess.run(["scancel", *{i.split("_")[0] for i in job_ids(sweep)}], capture_output=True)

    (job,) = [p.parent for p in sweep.glob("*/results.json")]
    (ref_job,) = [p.parent for p in ref_dir.glob("*/results.json")]
    signals = _submitit_events(sweep, "Caught signal SIGUSR2")
    requeues = _submitit_events(sweep, "Requeued job")
    assert signals and len(requeues) == len(signals), "the job was never cut by its time limit"
    results = json.loads((job / "results.json").read_text())
    assert results["resumed_from"].endswith("last.ckpt")
    assert not (job / "error.txt").exists()

    # same final metrics as the uninterrupted run
    ref_metrics = json.loads((ref_job / "results.json").read_text())["metrics"]
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss"):
        assert results["metrics"][key] == pytest.approx(ref_metrics[key], rel=1e-5, abs=1e-7), key
    # the same metrics log: every epoch exactly once, every row equal (but the wall-clock training time)
    log, ref_log = (pd.read_csv(d / "csv" / "metrics.csv").drop(columns="train/seconds") for d in (job, ref_job))
    per_epoch = log[log.epoch < EPOCHS].groupby("epoch")
    assert (per_epoch["val/loss"].count() == 1).all() and (per_epoch["train/loss"].count() == 1).all()
    assert sorted(log.epoch.dropna().unique()) == list(range(EPOCHS + 1))  # the epochs, then the test row
    pd.testing.assert_frame_equal(log, ref_log, rtol=1e-5, atol=1e-7)
    # and the same Jacobian-norm history (kept in the checkpoint)
    pd.testing.assert_frame_equal(
        pd.read_csv(job / "jacobian_norms.csv"), pd.read_csv(ref_job / "jacobian_norms.csv"), rtol=1e-5, atol=1e-7
    )

    starts = _submitit_events(sweep, "Starting with JobEnvironment")
    after = lambda times, t: min((x for x in times if x > t), default=float("nan"))  # noqa: E731
    print(
        f"requeued SLURM run: {len(signals)} time-out(s), {wall:.1f}s wall; signal -> resumed segment's first "
        "epoch: "
        + ", ".join(
            f"{after(first_seen.values(), t) - t:.1f}s (process restarted after {after(starts, t) - t:.1f}s)"
            for t in signals
        )
    )
    print(
        _epoch_rows(job / "csv" / "metrics.csv")[["step", "val/loss", "val/acc"]]
        .join(log[log["train/loss"].notna()].set_index("epoch")[["train/loss", "train/acc"]])
        .to_string()
    )


def test_a_submission_slurm_refuses_is_one_message_and_queues_nothing(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    proc = cli(
        tmp_path,
        "-m",
        *TINY,
        "seed=0,1",
        *SMALL_JOB,
        "+hydra.launcher.additional_parameters.no-such-option=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "SLURM refused the submission" in proc.stderr and "no-such-option" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(sweep.glob("*/results.json"))
