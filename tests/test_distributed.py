"""The GPU and cluster path, on the CPU: DDP with 2 processes (gloo) from the command line, the in-memory
batch path, evaluation on the module's device."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from stablenets.data import TensorBatches, epoch_order
from stablenets.eval import load_run
from stablenets.robustness import empirical_lipschitz

DDP = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model=nonexpansive", "model.depth=2",
       "model.width=8", "data.n_train=400", "data.n_val=100", "data.n_test=200", "trainer.max_epochs=3",
       "attack=pgd_l2", "attack.eps=[0,0.1]", "attack.n_iter=5", "attack.n_eval=200",
       "logger=csv"]


def _cli(tmp_path, *args):
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "stablenets.train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
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
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)).tolist())

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
    assert torch.equal(epoch_order(103, 4, epoch), torch.randperm(103, generator=torch.Generator().manual_seed(4 * 100_003 + epoch)))
    evaluation = list(TensorBatches(ds, 50, shuffle=False))
    assert torch.equal(torch.cat([b[0] for b in evaluation]), ds.tensors[0])  # in order, every sample once


def test_evaluation_runs_where_the_module_is(tmp_path):
    """train() moves the module back to its training device after fit (Lightning leaves it on the CPU);
    on a CPU run that is the CPU, and evaluation draws its random numbers there."""
    from problems import compose_cfg
    from stablenets.train import train

    cfg = compose_cfg(["model=nonexpansive", "model.depth=1", "data.n_train=200", "trainer.max_epochs=1",
                       "attack=pgd_l2", "attack.eps=[0,0.1]", "attack.n_iter=3",
                       "attack.random_start=true", "attack.n_eval=50", "logger=none"], tmp_path)
    metrics, objects = train(cfg)
    assert objects["task"].device == objects["trainer"].strategy.root_device == torch.device("cpu")
    assert "test/robust_acc/eps_0.1" in metrics
