"""Installable like a library: a wheel that carries its configs, user config dirs, the Python API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

import stablenets
from stablenets.api import compose, evaluate, load_model, train
from stablenets.collect import read_sweep
from stablenets.runner.search_path import ENV_VAR, recorded_search_path

ROOT = Path(__file__).resolve().parent.parent
QUICK_ATTACK = ["attack=pgd_l2", "attack.eps=[0,0.1]", "attack.n_iter=5", "attack.n_eval=50"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", ENV_VAR)}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


def _run(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_wheel(dest: Path) -> Path:
    """The wheel of the source tree, built from a copy (nothing is written into the tree)."""
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stablenets", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            dest / "dist",
            src,
        ],
        dest,
        _env(),
    )
    (wheel,) = (dest / "dist").glob("stablenets-*.whl")
    return wheel


def outer_site_dirs() -> list[str]:
    """The site dirs of the environment running the tests (a venv, a conda env or the system interpreter)."""
    import site
    import sysconfig

    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        ours.append(site.getusersitepackages())
    return list(dict.fromkeys(d for d in ours if os.path.isdir(d)))


def fresh_venv(venv: Path) -> Path:
    """An empty virtualenv that sees the packages of the environment running the tests — and nothing else.

    Made *without* ``--system-site-packages``: inside a venv, ``sys.executable -m venv`` makes a venv of the
    *base* interpreter, and whatever that interpreter holds must not decide whether the test passes.  A
    ``.pth`` file adds this environment's site dirs after the new venv's own, with their ``.pth`` files
    (``site.addsitedir``), one plain statement per line: a comprehension in a ``.pth`` line cannot see the
    names bound by the same line before Python 3.12 (PEP 709), so it must not use one."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})\n" for d in outer_site_dirs()]
    Path(purelib, "_outer_env.pth").write_text("".join(lines))
    return venv


def test_fresh_venv_sees_exactly_this_environment(tmp_path):
    """The helper venv imports this environment's packages from where this environment has them, whatever the
    base interpreter holds, and its ``.pth`` runs without an error on every Python."""
    venv = fresh_venv(tmp_path / "venv")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = "import sys, omegaconf, torch; print(omegaconf.__file__); print(torch.__file__); print(sys.flags.no_site)"
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=_env(), timeout=120)
    assert "Error processing line" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    import omegaconf
    import torch

    assert proc.stdout.split()[:2] == [omegaconf.__file__, torch.__file__]
    # and the base interpreter's own site-packages are not among its paths (no --system-site-packages)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg


def test_wheel_ships_every_config_and_runs_outside_the_tree(tmp_path, monkeypatch):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("stablenets/conf/") for n in names if n.startswith("stablenets/conf/")}
    assert shipped == {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    modules = {
        p.relative_to(ROOT).as_posix() for d in ("stablenets", "hydra_plugins") for p in (ROOT / d).rglob("*.py")
    }
    assert modules <= names, (
        f"not in the wheel: {sorted(modules - names)}; "
        "add the subpackage to [tool.setuptools] packages in pyproject.toml"
    )

    # a fresh environment (torch & co. from this one), its own stablenets shadowing any other install
    venv = fresh_venv(tmp_path / "venv")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            wheel,
        ],
        tmp_path,
        _env(),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [python, "-c", "import stablenets.runner.search_path as s; print(s.__file__); print(s.CONF_DIR)"],
        elsewhere,
        _env(),
    )
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(conf).is_relative_to(venv), where.stdout

    _run([bin_dir / "stablenets-train", "trainer.max_epochs=2"], elsewhere, _env())
    (run,) = (elsewhere / "outputs" / "runs" / "hnn_swiss_roll").iterdir()
    res = json.loads((run / "results.json").read_text())
    assert res["version"] == stablenets.__version__ and res["git_commit"] is None and res["git_dirty"] is None
    # the installed package computes what the source tree computes, to the last digit
    monkeypatch.chdir(tmp_path)
    source_metrics, _ = train(compose(["trainer.max_epochs=2"], output_dir=tmp_path / "source_run"))
    same = {k: v for k, v in source_metrics.items() if not k.endswith("seconds")}
    assert {k: res["metrics"][k] for k in same} == same

    other = tmp_path / "other"
    other.mkdir()
    _run([bin_dir / "stablenets-eval", run, *QUICK_ATTACK], other, _env())
    (ev,) = run.glob("eval/*/results.json")
    assert [p["eps"] for p in json.loads(ev.read_text())["robustness"]["curve"]] == [0.0, 0.1]


USER_NETS = '''
import math

import torch


class TinyNet(torch.nn.Module):
    """A model the package knows nothing about, importable from the user's project only."""

    def __init__(self, in_shape, out_dim, width=16):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(in_shape), width),
                                        torch.nn.Tanh(), torch.nn.Linear(width, out_dim))

    def forward(self, x):
        return self.body(x)
'''


@pytest.fixture
def user_project(tmp_path):
    """``my_nets.py`` (a new model class) and ``my_conf/`` (its model config and an experiment using it)."""
    project = tmp_path / "project"
    (project / "my_conf" / "model").mkdir(parents=True)
    (project / "my_conf" / "experiment").mkdir()
    (project / "my_nets.py").write_text(USER_NETS)
    (project / "my_conf" / "model" / "tiny.yaml").write_text("_target_: my_nets.TinyNet\nwidth: 8\n")
    (project / "my_conf" / "experiment" / "tiny_quick.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny\ntrainer:\n  max_epochs: 2\ndata:\n  n_train: 300\n"
    )
    return project


def test_user_config_dir_composes_trains_and_reloads(user_project, tmp_path, monkeypatch):
    # CLI, a relative hydra.searchpath
    pythonpath = os.pathsep.join(filter(None, [str(user_project), os.environ.get("PYTHONPATH")]))
    _run(
        [
            sys.executable,
            "-m",
            "stablenets.train",
            "hydra.searchpath=[file://my_conf]",
            "experiment=tiny_quick",
            "hydra.run.dir=runs/cli",
        ],
        user_project,
        _env(PYTHONPATH=pythonpath),
    )
    run = user_project / "runs" / "cli"
    assert json.loads((run / "results.json").read_text())["name"] == "tiny_quick"  # the preset's name
    assert recorded_search_path(run) == [f"file://{user_project / 'my_conf'}"]

    # re-loaded from another cwd, told nothing about my_conf: the run recorded it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.syspath_prepend(str(user_project))
    monkeypatch.delenv(ENV_VAR, raising=False)
    res = evaluate(run, QUICK_ATTACK)
    assert [p["eps"] for p in res["robustness"]["curve"]] == [0.0, 0.1]
    import my_nets

    assert isinstance(load_model(run), my_nets.TinyNet)

    # the Python API, the dir given by the environment variable
    with pytest.raises(ConfigCompositionException):
        compose(["model=tiny"])
    monkeypatch.setenv(ENV_VAR, str(user_project / "my_conf"))
    cfg = compose(["model=tiny", "trainer.max_epochs=2", "data.n_train=300"], output_dir=tmp_path / "api_run")
    assert ENV_VAR in {s.provider for s in cfg.hydra.runtime.config_sources}
    metrics, objects = train(cfg)
    assert isinstance(objects["net"], my_nets.TinyNet)
    assert json.loads((tmp_path / "api_run" / "results.json").read_text())["metrics"] == metrics
    assert recorded_search_path(tmp_path / "api_run") == [f"file://{user_project / 'my_conf'}"]

    runs, _ = read_sweep(user_project / "runs")
    assert runs.loc[0, "status"] == "finished" and runs.loc[0, "version"] == stablenets.__version__
    assert {"git_commit", "git_dirty"} <= set(runs.columns)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = (ROOT / "README.md").read_text().split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    run = tmp_path / "outputs" / "runs" / "api_demo"
    assert (run / "results.json").exists() and list(run.glob("eval/*/results.json"))
    assert "NonExpansiveNet" in capsys.readouterr().out
    assert read_sweep(run.parent)[0].run_dir.tolist() == ["api_demo"]  # laid out like a CLI run
