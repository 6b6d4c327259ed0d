"""Every option of every config group composes; every (model, data) pair builds and runs one batch."""
from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

import yaml

from problems import CONF, CONV_MODELS, GROUP_OPTIONS, compose_cfg, make_cifar_dataset, make_idx_dataset
from stablenets.errors import ConfigError
from stablenets.train import build_objects, train


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_option_composes(group, option, tmp_path):
    extra = ["lipschitz.L=2.0"] if (group, option) == ("lipschitz", "bound") else []
    cfg = compose_cfg([f"{group}={option}", *extra], tmp_path)
    assert cfg[group if group != "experiment" else "name"] is not None
    if group in ("trainer",) and option in ("gpu", "ddp"):
        assert cfg.trainer.accelerator == "gpu"  # composes; needs a GPU to instantiate
    elif group == "trainer":
        instantiate(cfg.trainer)
    elif group == "logger":
        assert all("_target_" in node for node in cfg.logger.values())


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
    return o


def _data_for(model: str) -> tuple[str, ...]:
    """The data sets a model (found by globbing conf/model/) is meant for, from its target class."""
    target = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["_target_"]
    if ".Conv" in target:
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


@pytest.mark.parametrize("model", CONV_MODELS)
def test_conv_model_on_vectors_is_a_config_error(model, tmp_path):
    cfg = compose_cfg([f"model={model}", "data=swiss_roll"], tmp_path)
    with pytest.raises(ConfigError, match="image inputs"):
        build_objects(cfg)


@pytest.mark.parametrize("option", GROUP_OPTIONS["experiment"])
def test_experiment_presets_build(option, tmp_path):
    cfg = compose_cfg([f"experiment={option}"], tmp_path)
    assert cfg.name and cfg.name != f"{cfg.hydra.runtime.choices.model}_{cfg.hydra.runtime.choices.data}"
    objects = build_objects(cfg)
    assert sum(p.numel() for p in objects["net"].parameters()) > 0
