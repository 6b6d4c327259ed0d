"""The accelerator path on a real GPU: ``pytest -m gpu`` on a machine with CUDA (``scripts/gpu_check.sh``).
Deselected from the default run by the ``gpu`` marker; on a machine without CUDA they are skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from problems import compose_cfg, make_idx_dataset, patch_images
from stablenets.data import TensorBatches
from stablenets.models import ConvNonExpansiveNet
from stablenets.robustness import empirical_lipschitz, pgd_l2

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

RUN = [
    "experiment=fmnist_nonexpansive",
    "trainer=gpu",
    "data.n_train=512",
    "data.n_val=64",
    "data.n_test=128",
    "trainer.max_epochs=2",
    "attack.n_iter=10",
    "attack.n_eval=128",
    "attack.random_start=true",
    "logger=csv",
]


def _data(tmp_path):
    return [f"data.data_dir={make_idx_dataset(tmp_path / 'idx', n_train=600, n_test=128)}", "data.search_system=false"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_run_trains_and_evaluates_on_the_gpu(tmp_path, precision):
    from stablenets.train import train

    cfg = compose_cfg([*RUN, *_data(tmp_path), f"trainer.precision={precision}"], tmp_path / "run")
    metrics, objects = train(cfg)
    assert objects["task"].device.type == "cuda"  # evaluated where it trained, not moved back to the host
    assert next(objects["net"].parameters()).dtype == torch.float32  # certificates in float32 whatever the training
    assert metrics["test/certificate_violations"] == 0 and metrics["test/certificate_audited"] > 0
    net = objects["net"].eval()
    x = objects["datamodule"].test_set.tensors[0][:32].cuda()
    ratio = empirical_lipschitz(net, x, n_pairs=64, ascent_steps=30, generator=torch.Generator().manual_seed(0))
    assert ratio <= net.lipschitz_bound() * (1 + 1e-3)


def test_eval_cli_uses_the_gpu(tmp_path):
    from stablenets.train import train

    train(compose_cfg([*RUN, *_data(tmp_path)], tmp_path / "run"))
    proc = subprocess.run(
        [sys.executable, "-m", "stablenets.eval", str(tmp_path / "run"), "trainer.accelerator=gpu", "attack.n_iter=5"],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (res,) = list((tmp_path / "run" / "eval").glob("*/results.json"))
    assert json.loads(res.read_text())["device"].startswith("cuda")


def test_random_draws_happen_on_the_tensors_device():
    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1).cuda().eval()
    x, y = (t.cuda() for t in patch_images(32, 12, 4))
    res = pgd_l2(
        net, x, y, [0.0, 0.5], n_iter=5, random_start=True, restarts=2, generator=torch.Generator().manual_seed(0)
    )
    assert res.broken.device.type == "cuda"
    assert empirical_lipschitz(net, x, n_pairs=16, ascent_steps=5, generator=torch.Generator().manual_seed(0)) > 0


def test_batches_are_indexed_on_the_gpu_and_equal_the_cpu_ones():
    from torch.utils.data import TensorDataset

    ds = TensorDataset(torch.randn(100, 3), torch.arange(100))
    gpu = list(TensorBatches(ds, 32, shuffle=True, seed=1, epoch=lambda: 3, device=lambda: torch.device("cuda")))
    cpu = list(TensorBatches(ds, 32, shuffle=True, seed=1, epoch=lambda: 3))
    assert all(b[0].is_cuda for b in gpu)
    assert all(torch.equal(a[1].cpu(), b[1]) for a, b in zip(gpu, cpu))
