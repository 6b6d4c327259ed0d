"""Sweeps with the real launchers (joblib, submitit's local executor), kill-and-resume, failures, W&B offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from problems import EPS, TINY, cli
from stablenets.collect import read_sweep


@pytest.mark.parametrize("launcher", ["local", "submitit_local"])
def test_two_by_two_sweep(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    proc = cli(
        tmp_path, "-m", *TINY, "model.T=0.5,2.0", "seed=0,1", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs, curves = read_sweep(sweep)
    assert len(runs) == 4 and (runs.status == "finished").all()
    assert sorted(zip(runs["model.T"], runs["seed"])) == [("0.5", "0"), ("0.5", "1"), ("2.0", "0"), ("2.0", "1")]
    assert curves.groupby("eps").size().to_dict() == {e: 4 for e in EPS}
    assert curves.certified_acc.notna().all()
    assert len({Path(r).name for r in runs.run_dir}) == 4  # no collisions
    # the CLI writes the same table
    out = subprocess.run([sys.executable, "-m", "stablenets.collect", str(sweep)], capture_output=True, text=True)
    assert out.returncode == 0 and "4 finished" in out.stdout
    assert len(pd.read_csv(sweep / "curves.csv")) == 4 * len(EPS)


def _final(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["metrics"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = ["model=hnn", "data.n_train=4000", "trainer.max_epochs=12", "logger=csv"]
    ref = tmp_path / "ref"
    assert cli(tmp_path, "-m", *args, "seed=3", f"hydra.sweep.dir={ref}").returncode == 0

    sweep = tmp_path / "sweep"
    cmd = ["-m", *args, "seed=3", f"hydra.sweep.dir={sweep}"]
    proc = cli(tmp_path, *cmd, background=True)
    deadline = time.time() + 300
    while not list(sweep.glob("*/checkpoints/last.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # mid-training: after the first checkpoint, long before epoch 12
    proc.wait()
    (job,) = [p.parent.parent for p in sweep.glob("*/checkpoints/last.ckpt")]
    (ref_job,) = list(ref.glob("*/results.json"))
    assert job.name == ref_job.parent.name  # the job dir is named by its overrides
    assert not (job / "results.json").exists()

    again = cli(tmp_path, *cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout
    resumed, reference = _final(job), _final(ref_job.parent)
    for key in ("test/acc", "test/loss", "val/acc", "train/loss"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), (key, resumed, reference)
    assert json.loads((job / "results.json").read_text())["resumed_from"].endswith("last.ckpt")
    # the metrics log continues across the kill: every epoch once, as in the uninterrupted run
    log, ref_log = (pd.read_csv(d / "csv" / "metrics.csv").drop(columns="train/seconds") for d in (job, ref_job.parent))
    assert (log[log.epoch < 12].groupby("epoch")["val/loss"].count() == 1).all()
    pd.testing.assert_frame_equal(log, ref_log, rtol=1e-5, atol=1e-7)

    # a relaunch of the finished sweep re-runs nothing
    third = cli(tmp_path, *cmd)
    assert "already finished" in third.stdout and "resuming" not in third.stdout


def test_failing_job_leaves_the_others_and_is_listed(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(tmp_path, "-m", *TINY, "model.depth=1,0,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0
    runs, curves = read_sweep(sweep)
    status = dict(zip(runs["model.depth"], runs.status))
    assert status == {"1": "finished", "0": "failed", "2": "finished"}
    assert "depth must be an integer >= 1" in runs.set_index("model.depth").loc["0", "error"]
    assert set(curves["model.depth"]) == {"1", "2"}


def test_wandb_offline_run_holds_metrics_config_and_table(tmp_path):
    from problems import read_wandb_records

    run = tmp_path / "run"
    proc = cli(tmp_path, *TINY, "logger=wandb", f"hydra.run.dir={run}", "group=wb")
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run_id = json.loads((run / "results.json").read_text())["run_id"]
    assert offline[0].name.endswith(run_id)  # deterministic id: a resumed run continues the same W&B run
    records = read_wandb_records(offline[0] / f"run-{run_id}.wandb")
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    config = {key(i): i.value_json for r in records if r.HasField("config") for i in r.config.update}
    assert "stablenets.models.NonExpansiveNet" in config["model"] and '"pgd_l2"' in config["attack"]
    assert json.loads(config["group"]) == "wb"
    logged = {key(i): i.value_json for r in records if r.HasField("history") for i in r.history.item}
    assert float(logged["test/acc"]) == pytest.approx(_final(run)["test/acc"])
    assert any(k.startswith("test/robust_acc/eps_") for k in logged)
    assert logged["robustness/curve/_type"] == '"table-file"' and "robustness/pgd_plot_table/path" in logged
    tables = list((offline[0] / "files").rglob("*.table.json"))
    assert tables and json.loads(tables[0].read_text())["columns"] == [
        "eps",
        "pgd_acc",
        "autoattack_acc",
        "certified_acc",
    ]
    assert len(json.loads(tables[0].read_text())["data"]) == len(EPS)


def test_recipe_with_several_user_overrides_names_one_study(tmp_path, monkeypatch):
    """A recipe relaunched with overrides that change the study writes to its own dir, named after them —
    a name holding ``=`` and ``,`` that must reach Hydra as one string, not as a sweep over groups."""
    from stablenets.runner.sweeps import launch_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    recipe = [*TINY, "seed=0,1", "hydra/launcher=local", "logger=csv"]
    sweep = launch_sweep(
        recipe, ["trainer.max_epochs=1", "data.n_train=100", "logger=none"], "tiny", root=tmp_path / "sweeps"
    )
    assert sweep.name == "tiny__data.n_train=100,trainer.max_epochs=1"  # logger= says how, not what: not in it
    runs, _ = read_sweep(sweep)
    assert len(runs) == 2 and (runs.status == "finished").all()
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert {r["group"] for r in results} == {sweep.name}
    configs = [yaml.safe_load((p.parent / "config.yaml").read_text()) for p in sweep.glob("*/results.json")]
    assert [(c["trainer"]["max_epochs"], c["data"]["n_train"], c["logger"]) for c in configs] == [(1, 100, {})] * 2
