"""The comparison's recipe (``experiments/layers_compared.py``): its table, the selection on validation, the study
named by its budget, searched settings read or refused, and a comparison in which every run fails."""

from __future__ import annotations

import math

import pytest


def _recipe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments" / "layers_compared.py"
    spec = importlib.util.spec_from_file_location("layers_compared", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_comparison_table_rows_columns_and_time_relative_to_cpl():
    import pandas as pd

    recipe = _recipe()
    runs = pd.DataFrame(
        [
            {
                "run_dir": "a",
                "model/layer": "sll",
                "model.size": "XS",
                "status": "finished",
                "budget/train_seconds": 30.0,
                "budget/steps_reached": 10.0,  # 3 s a step over the whole run
                "budget/epochs_reached": 5.0,
                "test/acc": 0.77,
                "memory/peak_mb": 900.0,
                "model/parameters": 1000.0,
                "test/lipschitz_bound": 1.0,
                "test/certificate_violations": 0.0,
            },
            {
                "run_dir": "b",
                "model/layer": "cpl",
                "model.size": "XS",
                "status": "finished",
                "budget/train_seconds": 20.0,
                "budget/steps_reached": 10.0,  # 2 s a step
                "budget/epochs_reached": 7.0,
                "memory/peak_mb": 800.0,
                "model/parameters": 900.0,
                "test/lipschitz_bound": 1.0,
                "test/certificate_violations": 0.0,
            },
            {"run_dir": "c", "model/layer": "aol", "model.size": "S", "status": "failed"},
        ]
    )
    curves = pd.DataFrame(
        [
            {"run_dir": d, "eps": e, "pgd_acc": p, "certified_acc": c}
            for d, base in (("a", 0.8), ("b", 0.7))
            for e, p, c in ((0.0, base, base), (0.25, base - 0.1, base - 0.3))
        ]
    )
    table = recipe.comparison_table(runs, curves)
    assert list(table.layer) == ["cpl", "sll", "aol"]  # XS before S, the families in their canonical order
    assert table.loc[1, "time vs CPL"] == 1.5 and table.loc[0, "time vs CPL"] == 1.0
    assert math.isnan(table.loc[2, "time vs CPL"])  # no CPL run of size S to compare with
    # clean: the whole test split (test/acc); the curve's ε = 0 point is on its subset of the images
    assert table.loc[1, "clean"] == 0.77 and table.loc[1, "clean (curve's images)"] == 0.8
    assert table.loc[1, "certified@0.25"] == pytest.approx(0.5)
    assert table.loc[0, "pgd@0.25"] == pytest.approx(0.6) and table.loc[2, "status"] == "failed"
    md = recipe.markdown(table).splitlines()
    assert len(md) == 2 + 3 and md[0].startswith("| layer | size | status | clean")


def test_comparison_keeps_per_family_the_run_best_on_validation_never_on_test():
    import pandas as pd

    recipe = _recipe()
    # two learning rates per family: sll's better run on validation is the worse one on test
    runs = pd.DataFrame(
        [
            {
                "run_dir": d,
                "model/layer": layer,
                "model.size": "XS",
                "task.optimizer.lr": lr,
                "status": status,
                "val/certified_acc": val,
                "budget/train_seconds": 20.0,
                "budget/steps_reached": 10.0,
            }
            for d, layer, lr, status, val in (
                ("a", "sll", "0.05", "finished", 0.40),
                ("b", "sll", "0.5", "finished", 0.55),
                ("c", "cpl", "0.05", "finished", 0.60),
                ("d", "cpl", "0.5", "failed", None),
            )
        ]
    )
    curves = pd.DataFrame(
        [
            {"run_dir": d, "eps": 0.25, "pgd_acc": 0.5, "certified_acc": c}
            for d, c in (("a", 0.70), ("b", 0.45), ("c", 0.50))
        ]
    )
    every = recipe.comparison_table(runs, curves)
    assert len(every) == 4 and set(every.lr) == {0.05, 0.5}
    best = recipe.select_best(every)
    assert list(zip(best.layer, best.lr)) == [("cpl", 0.05), ("sll", 0.5)]  # a failed run is never chosen
    assert list(best.runs) == [2, 2] and best.loc[1, "certified@0.25"] == pytest.approx(0.45)


def test_from_search_reads_each_familys_settings_and_refuses_a_missing_one(tmp_path):
    import pandas as pd

    recipe = _recipe()
    pd.DataFrame(
        [
            {"layer": "cpl", "size": "XS", "status": "finished", "lr": 0.02, "weight_decay": 1e-5},
            {"layer": "sll", "size": "XS", "status": "no result"},
        ]
    ).to_csv(tmp_path / "search_best.csv", index=False)
    assert recipe.searched_settings(tmp_path, ["cpl"], ["XS"]) == [("cpl", "XS", 0.02, 1e-5)]
    with pytest.raises(SystemExit, match="no finished search for sll XS"):
        recipe.searched_settings(tmp_path, ["cpl", "sll"], ["XS"])
    with pytest.raises(SystemExit, match="no search results"):
        recipe.searched_settings(tmp_path / "nowhere", ["cpl"], ["XS"])


@pytest.mark.parametrize(
    "content,needle",
    [("", "is damaged"), ("layer,size\ncpl,XS\n", "is not a search's result"), ('"unclosed\n', "is damaged")],
)
def test_damaged_search_results_are_one_message(tmp_path, content, needle):
    recipe = _recipe()
    (tmp_path / "search_best.csv").write_text(content)
    with pytest.raises(SystemExit, match=needle):
        recipe.searched_settings(tmp_path, ["cpl"], ["XS"])


def _run_recipe(tmp_path, *args: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(repo / "experiments" / "layers_compared.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_comparison_in_which_every_run_fails_says_so_and_a_bad_budget_is_refused(tmp_path):
    from problems import make_idx_dataset

    data = make_idx_dataset(tmp_path / "fmnist", n_train=64, n_test=32)
    tiny = [
        "model.base_width=4",
        "model.layers=1",
        f"data.data_dir={data}",
        "data.search_system=false",
        "data.n_train=32",
        "data.n_val=16",
        "data.n_test=16",
        "progress=none",
    ]
    run = _run_recipe(tmp_path, "--layers", "cpl,aol", "--budget", "00:00:00:05", *tiny, "model.layers=0")
    out = run.stdout + run.stderr
    assert (
        run.returncode == 1
        and "no run of" in out
        and "finished" in out
        and "Traceback (most recent call last)" not in run.stderr.split("layers_compared:")[-1]
    ), out[-3000:]
    sweep = next((tmp_path / "outputs" / "sweeps").glob("layers_compared_fmnist__budget=00:00:00:05__*"))
    import pandas as pd

    assert set(pd.read_csv(sweep / "comparison_all.csv").status) == {"failed"}  # both listed, as failed
    bad = _run_recipe(tmp_path, "--budget", "00:00:00:00")
    assert bad.returncode == 2 and "leaves no time to train" in bad.stderr


def test_the_study_is_named_by_its_preset_and_budget():
    import argparse

    recipe = _recipe()
    args = argparse.Namespace(group=None, data="fmnist_cpu", budget="00:00:05:00")
    assert recipe.study(args) == "layers_compared_fmnist_cpu__budget=00:00:05:00"
    assert recipe.study(args, "__from_search").endswith("__from_search")
    other = argparse.Namespace(group=None, data="fmnist_cpu", budget="00:00:10:00")
    assert recipe.study(other) != recipe.study(args)


@pytest.mark.slow
def test_recipe_compares_two_families_and_searches_two_trials(tmp_path):
    """The recipe end to end on tiny runs: the comparison (table, figure) and a 2-trial Optuna random search."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from problems import make_idx_dataset

    repo = Path(__file__).parents[1]
    data = make_idx_dataset(tmp_path / "fmnist", n_train=160, n_test=32)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    tiny = [
        "model.base_width=4",
        "model.layers=1",
        f"data.data_dir={data}",
        "data.search_system=false",
        "data.n_train=96",
        "data.n_val=32",
        "data.n_test=32",
        "attack.n_iter=3",
        "attack.n_eval=16",
        "progress=none",
    ]
    run = subprocess.run(
        [
            sys.executable,
            str(repo / "experiments" / "layers_compared.py"),
            "--layers",
            "cpl,aol",
            "--budget",
            "00:00:00:05",
            "--group",
            "lc",
            *tiny,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "sweeps").glob("lc__*"))
    table = __import__("pandas").read_csv(sweep / "comparison.csv")
    assert list(table.layer) == ["cpl", "aol"] and (table["audit violations"] == 0).all()
    assert (table["epochs"] >= 1).all() and (sweep / "certified_vs_time.png").stat().st_size > 0
    run = subprocess.run(
        [
            sys.executable,
            str(repo / "experiments" / "layers_compared.py"),
            "--search",
            "--trials",
            "2",
            "--layers",
            "aol",
            "--budget",
            "00:00:00:04",
            "--group",
            "lcs",
            *tiny,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    best = __import__("pandas").read_csv(next((tmp_path / "outputs" / "sweeps").glob("lcs__*")) / "search_best.csv")
    assert (
        best.loc[0, "trials"] == 2 and 1e-3 <= best.loc[0, "lr"] <= 1.0 and 1e-6 <= best.loc[0, "weight_decay"] <= 1e-2
    )
