"""Bad input: a one-paragraph message naming the key (and the allowed values), a non-zero exit, no traceback,
nothing written outside the run dir."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "stablenets.train", f"hydra.run.dir={tmp_path}/run", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


CASES = [
    (["model=transformer"], ["model", "hnn", "mlp", "nonexpansive"]),
    (["data=imagenet"], ["data", "swiss_roll", "fashion_mnist"]),
    (["model.depth=0"], ["model", "depth must be an integer >= 1", "0"]),
    (["model=mlp", "model.width=-3"], ["model", "width must be an integer >= 1", "-3"]),
    (["model.h=-0.1"], ["model", "h must be > 0", "-0.1"]),
    (["model=nonexpansive", "lipschitz=bound"], ["missing required value", "lipschitz.L"]),
    (["model=nonexpansive", "lipschitz=bound", "lipschitz.L=-1"], ["lipschitz.L must be a positive number", "-1"]),
    (["model=invnet", "data=inverse_2d", "task=inverse"], ["needs a Lipschitz bound", "lipschitz.L"]),
    (["model=mlp", "lipschitz=bound", "lipschitz.L=2"], ["takes no Lipschitz bound"]),
    (["model.activation=swish"], ["unknown activation", "swish", "relu"]),
    (["attack=pgd_l2", "attack.eps=[0,-0.1]"], ["attack.eps must be a list of numbers >= 0", "-0.1"]),
    (["attack=pgd_l2", "attack.n_iter=0"], ["attack.n_iter must be an integer >= 1", "0"]),
    (["model=conv_nonexpansive", "model.hidden_mult=0"], ["hidden_mult must be an integer >= 1"]),
    (["data=fashion_mnist", "model=conv_resnet", "data.data_dir=/nonexistent", "data.search_system=false"],
     ["fashion_mnist", "data.data_dir", "/usr/share/datasets/fashion-mnist", "data.download=true"]),
]


@pytest.mark.parametrize("overrides,needles", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_a_clear_error(tmp_path, overrides, needles):
    proc = run_cli(tmp_path, *overrides)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    # nothing was trained or written outside the run dir; no checkpoint or results inside it
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["run"])
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("results.json"))


def test_config_error_exits_with_code_2(tmp_path):
    assert run_cli(tmp_path, "model.depth=0").returncode == 2
