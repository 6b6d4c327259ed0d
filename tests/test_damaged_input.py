"""Damaged files wherever the runner reads: a one-paragraph message naming the file, exit code 2, no traceback,
and the damaged file left as it was; ``stablenets-collect`` lists a damaged run instead of failing.

The cases run through the real entry points (``stablenets-train`` with Hydra, ``stablenets-eval``,
``stablenets-export``, ``stablenets-collect``) in one Python process, on copies of one finished run.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from problems import make_idx_dataset, run_entry_points
from stablenets.api import compose, train

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_damaged_input")


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x00\xff garbage \x13\x37" * 50)


SMALL = ["data.n_train=32", "data.n_val=8", "data.n_test=16"]  # what _idx_dir's files hold


def _idx_dir(root: Path, damage) -> Path:
    """Small Fashion-MNIST-shaped IDX files (64 training, 32 test images) with one damaged by ``damage(path)``."""
    d = make_idx_dataset(root / "fmnist")
    damage(d)
    return d


def _plain_truncated_labels(d: Path) -> None:
    gz = d / "t10k-labels-idx1-ubyte.gz"
    data = gzip.decompress(gz.read_bytes())
    gz.unlink()
    (d / "t10k-labels-idx1-ubyte").write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    base = root / "base"
    train(compose(["trainer.max_epochs=2", "progress=none"], output_dir=base))
    cases = {}  # name -> (module, argv, the damaged file, needles)

    def copy(name: str) -> Path:
        d = root / "sweep" / name
        shutil.copytree(base, d)
        return d

    d = copy("ckpt_truncated")
    _truncate(d / "checkpoints" / "last.ckpt")
    cases["eval: truncated checkpoint"] = ("stablenets.eval", [str(d)], d / "checkpoints" / "last.ckpt", ["is damaged"])
    d = copy("ckpt_garbage")
    _garble(d / "checkpoints" / "last.ckpt")
    (d / "results.json").unlink()  # unfinished: the train command resumes from the (damaged) checkpoint
    cases["train resume: corrupt checkpoint"] = (
        "stablenets.train",
        [f"hydra.run.dir={d}", "trainer.max_epochs=2"],
        d / "checkpoints" / "last.ckpt",
        ["is damaged", "Delete it"],
    )
    d = copy("export_truncated")
    _truncate(d / "checkpoints" / "last.ckpt", 0.9)
    cases["export: truncated checkpoint"] = (
        "stablenets.runner.export",
        [str(d)],
        d / "checkpoints" / "last.ckpt",
        ["is damaged"],
    )
    d = copy("overrides_damaged")
    (d / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=2\n- [unclosed\n")
    cases["eval: damaged overrides.yaml"] = (
        "stablenets.eval",
        [str(d)],
        d / ".hydra" / "overrides.yaml",
        ["is damaged", "not valid YAML"],
    )
    d = copy("hydra_damaged")
    (d / ".hydra" / "hydra.yaml").write_text("hydra: {runtime: [1, 2\n")
    cases["eval: damaged hydra.yaml"] = ("stablenets.eval", [str(d)], d / ".hydra" / "hydra.yaml", ["is damaged"])
    d = copy("config_damaged")
    (d / "config.yaml").write_text("- just\n- a list\n")
    cases["eval: damaged config.yaml"] = ("stablenets.eval", [str(d)], d / "config.yaml", ["is damaged", "list"])
    d = copy("results_damaged")
    _truncate(d / "results.json")
    cases["train: damaged results.json"] = (
        "stablenets.train",
        [f"hydra.run.dir={d}", "trainer.max_epochs=2"],
        d / "results.json",
        ["is damaged", "not valid JSON"],
    )
    # truncated or corrupt IDX files (a .gz cut short, a plain file cut short, a garbled header)
    for name, damage, needle in [
        ("idx_gz_truncated", lambda d: _truncate(d / "train-images-idx3-ubyte.gz"), "train-images-idx3-ubyte.gz"),
        ("idx_truncated", _plain_truncated_labels, "t10k-labels-idx1-ubyte is truncated"),
        (
            "idx_header",
            lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00")),
            "not an IDX file",
        ),
    ]:
        data = _idx_dir(root / name, damage)
        cases[f"train: {name}"] = (
            "stablenets.train",
            [
                f"hydra.run.dir={root / name / 'run'}",
                "data=fashion_mnist",
                "model=conv_resnet",
                f"data.data_dir={data}",
                *SMALL,
            ],
            None,
            [needle, "replace it"],
        )
    # more images than the files hold: refused, naming the key and both counts (never a silent clamp)
    data = _idx_dir(root / "counts", lambda d: None)
    for key, needles in [
        ("data.n_train=100", ["data.n_train=100", "holds: 64", "data.n_val=8", "at most 56", "data.n_train=null"]),
        ("data.n_test=40", ["data.n_test=40", "holds: 32", "data.n_test=null"]),
        ("data.n_val=64", ["data.n_val=64 leaves no training images", "64 training images"]),
    ]:
        cases[f"train: {key}"] = (
            "stablenets.train",
            [
                f"hydra.run.dir={root / 'counts' / key.replace('=', '_')}",
                "data=fashion_mnist",
                "model=conv_resnet",
                f"data.data_dir={data}",
                *SMALL,
                key,
            ],
            None,
            needles,
        )
    before = {k: c[2].read_bytes() for k, c in cases.items() if c[2] is not None}
    todo = [(c[0], c[1]) for c in cases.values()] + [("stablenets.collect", [str(root / "sweep")])]
    results = run_entry_points(todo, root)
    return root, cases, before, dict(zip(cases, results)), results[-1]


CASE_NAMES = [
    "eval: truncated checkpoint",
    "train resume: corrupt checkpoint",
    "export: truncated checkpoint",
    "eval: damaged overrides.yaml",
    "eval: damaged hydra.yaml",
    "eval: damaged config.yaml",
    "train: damaged results.json",
    "train: idx_gz_truncated",
    "train: idx_truncated",
    "train: idx_header",
    "train: data.n_train=100",
    "train: data.n_test=40",
    "train: data.n_val=64",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_damaged_file_is_a_clear_error_and_left_as_it_was(outcomes, name):
    root, cases, before, results, _ = outcomes
    module, argv, damaged, needles = cases[name]
    code, output = results[name]["code"], results[name]["output"]
    print(f"{name} -> exit {code}: {output.strip()}")
    assert code == 2, output[-3000:]
    assert "Traceback" not in output
    for needle in [*needles, *([str(damaged)] if damaged else [])]:
        assert needle in output, output
    if damaged is not None:
        assert damaged.read_bytes() == before[name]  # nothing already written is changed
        assert not list(
            damaged.parents[1 if damaged.parent.name in ("checkpoints", ".hydra") else 0].glob("eval/*/results.json")
        )


def test_collect_lists_the_damaged_runs(outcomes):
    root, cases, _, _, collect = outcomes
    print(collect["output"])
    assert collect["code"] == 0, collect["output"]
    import pandas as pd

    runs = pd.read_csv(root / "sweep" / "runs.csv").set_index("run_dir")
    assert runs.loc["results_damaged", "status"] == "damaged"
    assert "results.json is damaged" in runs.loc["results_damaged", "error"]
    assert runs.loc["overrides_damaged", "status"] == "damaged"
    assert runs.loc["ckpt_truncated", "status"] == "finished"  # its results.json is intact
    assert "damaged: results_damaged" in collect["output"]
