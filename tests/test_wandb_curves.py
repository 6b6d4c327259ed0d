"""W&B: each run's robustness curve is in its history as points against the ε axis (``robustness/eps``, a step
metric), so a sweep's workspace overlays the curves natively.  Checked by reading the offline run files back."""

from __future__ import annotations

import json

import pytest

from problems import EPS, TINY, cli, read_wandb_records


def test_sweep_runs_log_curve_points_against_the_eps_axis(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(tmp_path, "-m", *TINY, "seed=0,1", "logger=wandb", "group=wbcurves", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(runs) == 2
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        (offline,) = list((run / "wandb").glob("offline-run-*"))
        records = read_wandb_records(offline / f"run-{results['run_id']}.wandb")
        groups = {r.run.run_group for r in records if r.HasField("run")}
        assert groups == {"wbcurves"}
        # the accuracies' step metric is the eps axis (an exact definition, not Lightning's "*" glob)
        steps = {r.metric.name: r.metric.step_metric for r in records if r.HasField("metric") and r.metric.name}
        for kind in ("pgd_acc", "certified_acc"):
            assert steps.get(f"robustness/{kind}") == "robustness/eps", steps
        rows = []
        for r in records:
            if r.HasField("history"):
                row = {key(i): json.loads(i.value_json) for i in r.history.item}
                if "robustness/eps" in row:
                    rows.append(row)
        curve = results["robustness"]["curve"]
        assert [row["robustness/eps"] for row in rows] == EPS == [p["eps"] for p in curve]
        for row, point in zip(rows, curve):
            assert row["robustness/pgd_acc"] == pytest.approx(point["pgd_acc"])
            assert row["robustness/certified_acc"] == pytest.approx(point["certified_acc"])
            assert "robustness/autoattack_acc" not in row  # no AutoAttack in this run: no empty series
            assert "trainer/global_step" not in row  # not a training-step row
