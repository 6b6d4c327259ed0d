"""A run dir is one run: its status is judged in one place (``RunDir.status``) and agreed on by every entry point;
results, config and checkpoint are checked to belong together wherever they are read; a launch that would mix two
runs is refused before anything is written; and the ways a run goes wrong end in one message, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from problems import cli, make_idx_dataset, run_entry_points, write_idx
from stablenets.api import compose, train
from stablenets.collect import read_sweep
from stablenets.runner.run_dir import RunDir

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_run_dir")


def _snapshot(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs of different configs (the default study, and an MLP on it)."""
    root = tmp_path_factory.mktemp("runs")
    train(compose(["trainer.max_epochs=2", "progress=none"], output_dir=root / "base"))
    train(compose(["model=mlp", "trainer.max_epochs=2", "progress=none"], output_dir=root / "other"))
    return root


def _copy(runs: Path, name: str, dest: Path, new: str) -> Path:
    out = dest / "sweep" / new
    shutil.copytree(runs / name, out)
    return out


def test_an_audit_failed_run_is_failed_everywhere(runs, tmp_path):
    run = _copy(runs, "base", tmp_path, "audit_failed")
    # what the runner leaves when the certificate audit breaks a certificate: results.json kept, error.txt beside it
    (run / "error.txt").write_text("Traceback ...\nCertificateError: the certificate audit broke 1 of 9 pairs\n")
    assert RunDir(run).status().state == "failed"
    table, _ = read_sweep(tmp_path / "sweep")
    assert table.loc[0, "status"] == "failed" and "audit broke" in table.loc[0, "error"]
    out = run_entry_points([("stablenets.eval", [str(run)]), ("stablenets.runner.export", [str(run)])], tmp_path)
    for o in out:
        assert o["code"] == 2 and "failed" in o["output"] and "Traceback" not in o["output"], o["output"]


def test_results_of_another_run_are_refused_and_listed_damaged(runs, tmp_path):
    run = _copy(runs, "base", tmp_path, "foreign_results")
    _copy(runs, "base", tmp_path, "good")
    shutil.copy(runs / "other" / "results.json", run / "results.json")
    before = _snapshot(run)
    out = run_entry_points(
        [
            ("stablenets.runner.export", [str(run)]),
            ("stablenets.eval", [str(run)]),
            ("stablenets.train", [f"hydra.run.dir={run}", "trainer.max_epochs=2"]),
        ],
        tmp_path,
    )
    for o in out:
        assert o["code"] == 2 and "does not belong to this run" in o["output"], o["output"]
    assert _snapshot(run) == before  # nothing written, the export included
    table, _ = read_sweep(tmp_path / "sweep")
    status = dict(zip(table.run_dir, table.status))
    assert status == {"foreign_results": "damaged", "good": "finished"}


def test_a_checkpoint_of_other_weights_is_refused(runs, tmp_path):
    run = _copy(runs, "base", tmp_path, "other_weights")
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = state["state_dict"][key] + 1e-3
    torch.save(state, ckpt)
    out = run_entry_points([("stablenets.eval", [str(run)]), ("stablenets.runner.export", [str(run)])], tmp_path)
    for o in out:
        assert o["code"] == 2 and "is not the checkpoint" in o["output"], o["output"]
    assert not (run / "export").exists() and not (run / "eval").exists()


@pytest.mark.parametrize("finished", [True, False])
def test_a_relaunch_of_another_config_is_refused_and_leaves_the_record(runs, tmp_path, finished):
    run = _copy(runs, "base", tmp_path, "relaunched")
    if not finished:
        (run / "results.json").unlink()  # a run with a checkpoint, to be resumed
    before = _snapshot(run)
    out = run_entry_points(
        [("stablenets.train", [f"hydra.run.dir={run}", "model=mlp", "trainer.max_epochs=2"])], tmp_path
    )[0]
    assert out["code"] == 2 and "holds a run of another config" in out["output"], out["output"]
    assert "model" in out["output"] and "Traceback" not in out["output"]
    assert _snapshot(run) == before  # config.yaml and .hydra/ as they were, no error.txt


def test_a_relaunch_that_only_changes_where_it_runs_is_the_same_run(runs, tmp_path):
    run = _copy(runs, "base", tmp_path, "same")
    out = run_entry_points(
        [("stablenets.train", [f"hydra.run.dir={run}", "trainer.max_epochs=2", "num_threads=1", "progress=lines"])],
        tmp_path,
    )[0]
    assert out["code"] == 0 and "already finished" in out["output"], out["output"]


def test_two_runs_into_one_dir_the_second_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    run = tmp_path / "run"
    slow = [
        "trainer.max_epochs=20",
        "+callbacks.pace._target_=problems.Pace",
        "+callbacks.pace.seconds_per_step=0.02",
        "progress=none",
        f"hydra.run.dir={run}",
    ]
    first = cli(tmp_path, *slow, background=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.1)
    second = cli(tmp_path, *slow)
    assert second.returncode == 2 and "is being written by another process" in second.stderr, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr  # who holds it
    os.killpg(first.pid, signal.SIGKILL)  # killed mid-run: the kernel releases its lock
    first.wait()
    resumed = cli(tmp_path, *slow)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["resumed_from"]


def test_the_ways_a_run_goes_wrong_are_one_message(runs, tmp_path):
    damaged_csv = _copy(runs, "base", tmp_path, "damaged_csv")
    (damaged_csv / "results.json").unlink()
    (damaged_csv / "csv" / "metrics.csv").write_text("epoch,train/loss\n0,0.5,0.1,7\n")
    csv_before = (damaged_csv / "csv" / "metrics.csv").read_bytes()
    finished = _copy(runs, "base", tmp_path, "finished")
    wrong_shape = tmp_path / "wrong_shape"
    make_idx_dataset(wrong_shape)
    import numpy as np

    write_idx(wrong_shape / "t10k-images-idx3-ubyte", np.zeros((32, 20, 20), dtype=np.uint8))  # not 28x28
    small = ["data=fashion_mnist", "model=conv_resnet", "data.n_train=32", "data.n_val=8", "data.n_test=16"]
    cases = {
        "diverged": (["task.optimizer.lr=1e30", "trainer.max_epochs=2"], "training diverged"),
        "damaged metrics.csv on resume": ([f"hydra.run.dir={damaged_csv}", "trainer.max_epochs=2"], "is damaged"),
        "DDP with too little data": (
            ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.n_val=1"],
            "fewer than the 2 DDP ranks",
        ),
        "images of another shape": (
            [*small, f"data.data_dir={wrong_shape}", "data.search_system=false"],
            "not fashion_mnist files",
        ),
    }
    calls = [
        (
            "stablenets.train",
            [*o, *([f"hydra.run.dir={tmp_path / k.replace(' ', '_')}"] if "hydra.run.dir" not in " ".join(o) else [])],
        )
        for k, (o, _) in cases.items()
    ]
    calls.append(("stablenets.runner.export", [str(finished), "--out", "/proc/no_such_dir/export"]))
    outs = run_entry_points(calls, tmp_path)
    for (name, (_, needle)), out in zip(cases.items(), outs):
        assert out["code"] == 2 and needle in out["output"] and "Traceback" not in out["output"], (name, out["output"])
    assert (damaged_csv / "csv" / "metrics.csv").read_bytes() == csv_before
    assert outs[-1]["code"] == 2 and "cannot write the export" in outs[-1]["output"], outs[-1]["output"]
    assert not (finished / "export").exists()


def test_collect_keeps_the_good_runs_beside_a_results_file_of_odd_shape(runs, tmp_path):
    odd = _copy(runs, "base", tmp_path, "odd")
    _copy(runs, "base", tmp_path, "good")
    res = json.loads((odd / "results.json").read_text())
    res["robustness"] = ["not", "a", "table"]
    (odd / "results.json").write_text(json.dumps(res))
    table, _ = read_sweep(tmp_path / "sweep")
    assert dict(zip(table.run_dir, table.status)) == {"good": "finished", "odd": "damaged"}
