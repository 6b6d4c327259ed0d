"""``stablenets-eval``: a finished run re-evaluated from its own config and checkpoint, with a new attack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_eval_recomputes_the_curve_from_config_and_checkpoint(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = tmp_path / "run"
    train = [
        sys.executable,
        "-m",
        "stablenets.train",
        "model=nonexpansive",
        "model.depth=2",
        "model.width=8",
        "lipschitz=bound",
        "lipschitz.L=2",
        "trainer.max_epochs=3",
        "data.n_test=200",
        f"hydra.run.dir={run}",
    ]
    assert subprocess.run(train, cwd=tmp_path, env=env, capture_output=True).returncode == 0
    trained = json.loads((run / "results.json").read_text())["metrics"]

    # certified pairs attacked too (skip_certified=false): certified <= PGD is then a check, not a construction
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "stablenets.eval",
            str(run),
            "attack=pgd_l2",
            "attack.eps=[0,0.1,0.3]",
            "attack.n_iter=20",
            "attack.n_eval=200",
            "attack.skip_certified=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    (out,) = list((run / "eval").glob("*/results.json"))
    res = json.loads(out.read_text())
    # the same weights: the bound and the clean accuracy on those points agree with the trained run
    assert res["metrics"]["test/lipschitz_bound"] == pytest.approx(trained["test/lipschitz_bound"], rel=1e-6)
    curve = res["robustness"]["curve"]
    assert [p["eps"] for p in curve] == [0.0, 0.1, 0.3]
    assert curve[0]["pgd_acc"] == pytest.approx(trained["test/acc"], abs=1e-6)  # all 200 test points, same weights
    assert all(c["certified_acc"] <= c["pgd_acc"] + 1e-9 for c in curve)
    assert 0 < curve[1]["certified_acc"] < curve[0]["pgd_acc"]  # non-trivial certificates, strictly inside
    audit = res["robustness"]["certificate_audit"]
    assert audit["audited"] > 0 and audit["violations"] == 0
    assert "PGD" in ev.stdout and "outputs:" in ev.stdout  # the summary table

    bad = subprocess.run(
        [sys.executable, "-m", "stablenets.eval", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "is not a run dir" in bad.stderr and "Traceback" not in bad.stderr
