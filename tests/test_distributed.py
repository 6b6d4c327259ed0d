"""The GPU and cluster path, on the CPU: DDP with 2 processes (gloo) from the command line, the in-memory
batch path, evaluation on the module's device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from stablenets.data import TensorBatches, epoch_order
from stablenets.eval import load_run
from stablenets.robustness import empirical_lipschitz

DDP = [
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "model=nonexpansive",
    "model.depth=2",
    "model.width=8",
    "data.n_train=400",
    "data.n_val=100",
    "data.n_test=200",
    "trainer.max_epochs=3",
    "attack=pgd_l2",
    "attack.eps=[0,0.1]",
    "attack.n_iter=5",
    "attack.n_eval=200",
    "logger=csv",
]


def _cli(tmp_path, *args):
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "stablenets.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ddp_single_run_and_multirun(tmp_path):
    _cli(tmp_path, *DDP, f"hydra.run.dir={tmp_path}/run")
    results = list(tmp_path.rglob("results.json"))
    assert results == [tmp_path / "run" / "results.json"]  # rank 0 alone writes
    m = json.loads(results[0].read_text())["metrics"]
    assert m["ddp/replica_max_diff"] == 0.0  # weights and power-method buffers identical on both ranks
    # test/acc is reduced over the two ranks' halves of the test set: it equals rank 0's clean accuracy on all of it
    assert m["test/acc"] == pytest.approx(m["test/robust_acc/eps_0"], abs=1e-6)
    assert 0.4 < m["test/acc"]  # trained (2 classes)
    assert m["test/certificate_violations"] == 0
    cfg, objects = load_run(tmp_path / "run")
    net = objects["net"].eval()
    x = objects["datamodule"].test_set.tensors[0][:64]
    ratio = empirical_lipschitz(net, x, n_pairs=128, ascent_steps=50, generator=torch.Generator().manual_seed(0))
    assert ratio <= net.lipschitz_bound() * (1 + 1e-4)
    # the same run as a job of a multirun: Lightning's own launcher would re-run the sweep in every rank
    sweep = tmp_path / "sweep"
    _cli(tmp_path, "-m", *DDP, "seed=1", f"hydra.sweep.dir={sweep}")
    (job,) = list(sweep.glob("*/results.json"))
    assert json.loads(job.read_text())["metrics"]["ddp/replica_max_diff"] == 0.0
    assert len(list(sweep.iterdir())) == 2  # the job dir and multirun.yaml: no second sweep from the other rank


class _EpochOrder(Sampler[int]):
    """The reference loader path: per-sample indices in the epoch's seeded order."""

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __iter__(self):
        return iter(
            torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)).tolist()
        )

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_tensor_batches_equal_the_loader_path(epoch):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(103, 3, generator=g), torch.randint(0, 5, (103,), generator=g))
    fast = list(TensorBatches(ds, 16, shuffle=True, seed=4, epoch=lambda: epoch))
    ref = list(DataLoader(ds, batch_size=16, sampler=_EpochOrder(103, 4, epoch)))
    assert len(fast) == len(ref) == 7
    for (xa, ya), (xb, yb) in zip(fast, ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(
        epoch_order(103, 4, epoch), torch.randperm(103, generator=torch.Generator().manual_seed(4 * 100_003 + epoch))
    )
    evaluation = list(TensorBatches(ds, 50, shuffle=False))
    assert torch.equal(torch.cat([b[0] for b in evaluation]), ds.tensors[0])  # in order, every sample once


def test_evaluation_runs_where_the_module_is(tmp_path):
    """train() moves the module back to its training device after fit (Lightning leaves it on the CPU);
    on a CPU run that is the CPU, and evaluation draws its random numbers there."""
    from problems import compose_cfg
    from stablenets.train import train

    cfg = compose_cfg(
        [
            "model=nonexpansive",
            "model.depth=1",
            "data.n_train=200",
            "trainer.max_epochs=1",
            "attack=pgd_l2",
            "attack.eps=[0,0.1]",
            "attack.n_iter=3",
            "attack.random_start=true",
            "attack.n_eval=50",
            "logger=none",
        ],
        tmp_path,
    )
    metrics, objects = train(cfg)
    assert objects["task"].device == objects["trainer"].strategy.root_device == torch.device("cpu")
    assert "test/robust_acc/eps_0.1" in metrics


def _rank_processes(config: str) -> list[int]:
    """Pids of the processes whose command line names ``config`` (the extra DDP ranks of one run)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and config in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow  # two DDP segments and an uninterrupted reference: ~75 s
def test_ddp_run_killed_resumes_to_the_same_result(tmp_path):
    """Rank 0 killed mid-training: the other rank stops instead of hanging in a collective, and the relaunched
    job resumes from ``last.ckpt`` on both ranks to the uninterrupted run's results."""
    args = [*DDP, "data.n_train=2000", "trainer.max_epochs=10", "seed=2"]
    ref = tmp_path / "ref"
    _cli(tmp_path, "-m", *args, f"hydra.sweep.dir={ref}")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "stablenets.train", "-m", *args, f"hydra.sweep.dir={sweep}"]
    rank0 = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "offline"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not list(sweep.glob("*/checkpoints/last.ckpt")) and time.time() < deadline and rank0.poll() is None:
        time.sleep(0.05)
    assert rank0.poll() is None, "the run ended before it could be killed"
    (job,) = [p.parent.parent for p in sweep.glob("*/checkpoints/last.ckpt")]
    others = _rank_processes(str(job / ".ddp" / "config.yaml"))
    assert others, "no second rank found"
    os.kill(rank0.pid, signal.SIGKILL)  # rank 0 alone, as the OOM killer would
    rank0.wait()
    deadline = time.time() + 20
    while _rank_processes(str(job / ".ddp" / "config.yaml")) and time.time() < deadline:
        time.sleep(0.2)
    assert not _rank_processes(str(job / ".ddp" / "config.yaml")), "rank 1 outlived rank 0"
    assert not (job / "results.json").exists()

    again = _cli(tmp_path, "-m", *args, f"hydra.sweep.dir={sweep}")
    assert "resuming" in again.stdout
    (ref_job,) = list(ref.glob("*/results.json"))
    resumed, reference = (json.loads(p.read_text())["metrics"] for p in (job / "results.json", ref_job))
    assert resumed["ddp/replica_max_diff"] == 0.0
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss", "test/lipschitz_bound"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), (key, resumed, reference)


def test_extra_rank_exits_when_its_launcher_dies(tmp_path):
    """The watch in every extra rank: with NCCL a dead rank 0 is not noticed by a collective until its
    30-minute time-out; the rank must end by itself (gloo, above, notices a closed socket anyway)."""
    child = (
        "import time, sys; from stablenets.runner.rank_worker import _exit_with_parent; "
        "_exit_with_parent(0.1); print('ready', flush=True); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=open({str(tmp_path / 'out')!r}, 'w')); "
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.time() + 60
    while (
        "ready" not in ((tmp_path / "out").read_text() if (tmp_path / "out").exists() else "")
        and time.time() < deadline
    ):
        time.sleep(0.05)
    assert "ready" in (tmp_path / "out").read_text(), "the rank did not start its watch"
    pid = int((tmp_path / "pid").read_text())
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.05)
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "gone"
    assert status in ("gone", "Z"), f"the extra rank is still running ({status})"
