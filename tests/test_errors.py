"""Bad input: a one-paragraph message naming the key (and the allowed values), a non-zero exit, no traceback,
nothing written outside the run dir.

Every case goes through the real command-line entry point (``stablenets.train.main``, Hydra included) with
its own ``sys.argv``; the cases share one Python process so that the suite pays the start-up once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from problems import run_entry_points

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_errors")

CASES = [
    (["model=transformer"], ["model", "hnn", "mlp", "nonexpansive"]),
    (["data=imagenet"], ["data", "swiss_roll", "fashion_mnist"]),
    (["model.depth=0"], ["model", "depth must be an integer >= 1", "0"]),
    (["model=mlp", "model.width=-3"], ["model", "width must be an integer >= 1", "-3"]),
    (["model.h=-0.1"], ["model", "h must be > 0", "-0.1"]),
    (["model=nonexpansive", "lipschitz=bound"], ["missing required value", "lipschitz.L"]),
    (["model=nonexpansive", "lipschitz=bound", "lipschitz.L=-1"], ["lipschitz.L must be > 0", "-1"]),
    (["model=invnet", "data=inverse_2d", "task=inverse"], ["needs a Lipschitz bound", "lipschitz.L"]),
    (["model=mlp", "lipschitz=bound", "lipschitz.L=2"], ["takes no Lipschitz bound"]),
    (["model.activation=swish"], ["unknown activation", "swish", "relu"]),
    (["attack=pgd_l2", "attack.eps=[0,-0.1]"], ["attack.eps[1] must be >= 0", "-0.1"]),
    (["attack=pgd_l2", "attack.n_iter=0"], ["attack.n_iter must be an integer >= 1", "0"]),
    (["model=conv_nonexpansive", "model.hidden_mult=0"], ["hidden_mult must be an integer >= 1"]),
    (
        ["data=fashion_mnist", "model=conv_resnet", "data.data_dir=/nonexistent", "data.search_system=false"],
        ["fashion_mnist", "data.data_dir", "/usr/share/datasets/fashion-mnist", "data.download=true"],
    ),
    (
        ["data=fashion_mnist", "model=conv_resnet", "data.data_dir=/a/path/that/does/not/exist"],
        ["data.data_dir=/a/path/that/does/not/exist does not exist", "data.download=true"],
    ),
    (["data=fashion_mnist", "model=conv_resnet", "data.n_train=0"], ["data.n_train must be an integer >= 1", "null"]),
    (["data=fashion_mnist", "model=conv_resnet", "data.n_test=-5"], ["data.n_test must be an integer >= 1", "-5"]),
    (["task.optimizer.lr=-1"], ["task.optimizer", "Invalid learning rate: -1"]),
    (["progress=loud"], ["progress must be one of", "lines", "loud"]),
    (["certificate=tight"], ["certificate must be one of", "pairwise", "tight"]),
    # nan / inf / absurdly large numbers, in any numeric key
    (["model.h=nan"], ["model.h=nan is not a finite number"]),
    (["task.optimizer.lr=inf"], ["task.optimizer.lr=inf is not a finite number"]),
    (["attack=pgd_l2", "attack.eps=[0,inf]"], ["attack.eps[1]=inf is not a finite number"]),
    (["model=nonexpansive", "lipschitz=bound", "lipschitz.L=-inf"], ["lipschitz.L=-inf is not a finite number"]),
    (["trainer.gradient_clip_val=nan"], ["trainer.gradient_clip_val=nan is not a finite number"]),
    (["model.depth=1000000000"], ["model.depth=1000000000 is absurdly large"]),
    (["model=mlp", "model.width=200000"], ["parameters: training needs about", "GiB", "model.width=200000"]),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    cases = [(str(root / f"case{i}" / "run"), overrides) for i, (overrides, _) in enumerate(CASES)]
    for run, _ in cases:
        Path(run).parent.mkdir()
    results = run_entry_points([("stablenets.train", [f"hydra.run.dir={run}", *o]) for run, o in cases], root)
    return root, results


@pytest.mark.parametrize("i", range(len(CASES)), ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_a_clear_error(outcomes, i):
    root, results = outcomes
    code, output = results[i]["code"], results[i]["output"]
    assert code != 0
    assert "Traceback" not in output
    for needle in CASES[i][1]:
        assert needle in output, output
    # nothing was trained or written outside the run dir; no checkpoint or results inside it
    case = root / f"case{i}"
    assert sorted(p.name for p in case.iterdir()) in ([], ["run"])
    assert not list(case.rglob("*.ckpt")) and not list(case.rglob("results.json"))


def _outcome(outcomes, overrides: list[str]) -> dict:
    """The outcome of the case with these overrides (by content, not by its place in the list)."""
    _, results = outcomes
    return results[[c[0] for c in CASES].index(overrides)]


def test_config_error_exits_with_code_2(outcomes):
    assert _outcome(outcomes, ["model.depth=0"])["code"] == 2  # our own check
    assert _outcome(outcomes, ["attack=pgd_l2", "attack.n_iter=0"])["code"] == 2
    assert _outcome(outcomes, ["model=transformer"])["code"] == 1  # Hydra's composition errors exit with 1
