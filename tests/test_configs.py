"""Every option of every config group composes; every (model, data) pair builds and runs one batch."""

from __future__ import annotations

import copy
import importlib
import inspect
import json

import pytest
import torch
import yaml
from hydra.utils import instantiate

from problems import CONF, CONV_MODELS, GROUP_OPTIONS, compose_cfg, make_cifar_dataset, make_idx_dataset
from stablenets.runner.config import build_objects
from stablenets.runner.errors import ConfigError
from stablenets.train import train


def _accepted(target) -> set[str] | None:
    """The keyword arguments a class accepts, following ``**kwargs`` up its bases (``None``: anything)."""
    names: set[str] = set()
    for cls in target.__mro__ if inspect.isclass(target) else [target]:
        if "__init__" not in vars(cls) and inspect.isclass(target):
            continue
        params = inspect.signature(cls.__init__ if inspect.isclass(target) else cls).parameters
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
    return None


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_option_composes_and_its_keys_are_used(group, option, tmp_path):
    """Each option composes with the defaults; every key of every node it configures is a parameter of that
    node's target (a misspelt or stale key would otherwise be ignored or fail deep inside a run)."""
    extra = ["lipschitz.L=2.0"] if (group, option) == ("lipschitz", "bound") else []
    cfg = compose_cfg([f"{group}={option}", *extra], tmp_path)
    nodes = [
        cfg.model,
        cfg.data,
        cfg.task,
        cfg.task.optimizer,
        cfg.trainer,
        *cfg.logger.values(),
        *cfg.callbacks.values(),
    ]
    nodes += [cfg.task[k] for k in ("scheduler", "loss") if cfg.task.get(k)]
    for node in nodes:
        module, _, name = node._target_.rpartition(".")
        accepted = _accepted(getattr(importlib.import_module(module), name))
        keys = {k for k in node if not k.startswith("_")} - {"optimizer", "scheduler", "loss"}
        assert accepted is None or keys <= accepted, (node._target_, keys - accepted)
    if group == "trainer" and option in ("gpu", "ddp") and not torch.cuda.is_available():
        with pytest.raises(Exception, match="(?i)gpu|cuda"):  # refused clearly on a machine without one
            instantiate(cfg.trainer)
    elif group in ("trainer", "logger", "callbacks"):
        nodes = [cfg.trainer] if group == "trainer" else list(cfg[group].values())
        built = [instantiate(n) for n in nodes]  # each node builds an object of its own target's class
        assert [type(b).__name__ for b in built] == [n._target_.rpartition(".")[2] for n in nodes]
        assert (len(built) == 0) == (option == "none")


def _pair_overrides(model: str, data: str, root) -> list[str]:
    o = [f"model={model}", f"data={data}", "debug=fast"]
    if data in ("fashion_mnist", "mnist"):
        o += [f"data.data_dir={make_idx_dataset(root / data)}", "data.search_system=false"]
    if data == "cifar10":
        o += [f"data.data_dir={make_cifar_dataset(root / data)}"]
    if data in ("fashion_mnist", "mnist", "cifar10"):
        o += ["data.n_train=32", "data.n_val=8", "data.n_test=16", "data.batch_size=16"]
    if data == "inverse_2d":
        o += ["task=inverse"]
    if data == "dynamics":
        o += ["task=dynamics", "trainer.inference_mode=false"]
    if model == "invnet":
        o += ["lipschitz=bound", "lipschitz.L=2.0"]
    if model == "lipconvnet":  # the XS net takes minutes here; the structure is the same at width 4
        o += ["model.base_width=4", "model.layers=1"]
    return o


def _data_for(model: str) -> tuple[str, ...]:
    """The data sets a model (found by globbing conf/model/) is meant for, from its target class."""
    target = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["_target_"].rsplit(".", 1)[1]
    if "Conv" in target:
        return ("fashion_mnist", "mnist", "cifar10")
    if target.endswith("Field") or target.endswith("FieldMLP"):
        return ("dynamics",)
    return ("swiss_roll", "inverse_2d", "fashion_mnist")


PAIRS = [(m, d) for m in GROUP_OPTIONS["model"] for d in _data_for(m)]


@pytest.mark.parametrize("model,data", PAIRS)
def test_fast_dev_run_every_pair(model, data, tmp_path):
    cfg = compose_cfg(_pair_overrides(model, data, tmp_path), tmp_path / "run")
    if model == "invnet" and data == "fashion_mnist":  # InvNet pads its input: 784 inputs exceed width 10
        with pytest.raises(ConfigError, match="width must be >="):
            build_objects(cfg)
        return
    metrics, objects = train(cfg)
    assert (tmp_path / "run" / "results.json").exists()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"].keys() == metrics.keys()
    assert any(k.startswith("test/") for k in metrics)


@pytest.mark.parametrize("model", GROUP_OPTIONS["model"])
def test_every_model_takes_module_apply_and_deepcopy(model, tmp_path):
    """The everyday ``nn.Module`` API works on every model: ``deepcopy`` gives the same function, and
    ``net.apply(fn)`` (no layer may shadow it) visits every submodule, e.g. to re-initialise it."""
    cfg = compose_cfg(_pair_overrides(model, _data_for(model)[0], tmp_path), tmp_path / "run")
    objects = build_objects(cfg)
    net, dm = objects["net"].eval(), objects["datamodule"]
    dm.setup()
    x = dm.test_set.tensors[0][:4]
    clone = copy.deepcopy(net)
    with torch.enable_grad():  # the Lyapunov field differentiates V
        assert torch.equal(net(x), clone(x))
    visited = []
    assert net.apply(visited.append) is net
    assert len(visited) == len(list(net.modules())) > 1
    net.apply(lambda m: [p.data.zero_() for p in m.parameters(recurse=False)])
    assert all(not p.any() for p in net.parameters())
    assert any(p.any() for p in clone.parameters())  # the copy owns its parameters


@pytest.mark.parametrize("model", CONV_MODELS)
def test_conv_model_on_vectors_is_a_config_error(model, tmp_path):
    cfg = compose_cfg([f"model={model}", "data=swiss_roll"], tmp_path)
    with pytest.raises(ConfigError, match="image inputs"):
        build_objects(cfg)


@pytest.mark.parametrize("option", GROUP_OPTIONS["experiment"])
def test_experiment_presets_build(option, tmp_path):
    """Each preset builds its model on its data, and the model maps a batch to the data's output size."""
    cfg = compose_cfg([f"experiment={option}"], tmp_path)
    if cfg.data._target_.endswith("ImageDataModule"):
        files = (
            make_cifar_dataset(tmp_path / "cifar") if cfg.data.name == "cifar10" else make_idx_dataset(tmp_path / "idx")
        )
        cfg = compose_cfg(
            [f"experiment={option}", f"data.data_dir={files}", "data.n_train=32", "data.n_val=8", "data.n_test=16"],
            tmp_path,
        )
    assert cfg.name == option  # each preset names its runs
    objects = build_objects(cfg)
    dm, net = objects["datamodule"], objects["net"]
    dm.setup()
    x = dm.train_set.tensors[0][:5]
    with torch.enable_grad():  # the Lyapunov field differentiates V
        assert net(x).shape == (5, dm.out_dim)
