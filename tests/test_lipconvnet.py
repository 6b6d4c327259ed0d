"""The comparison's benchmark ConvNet (every layer family plugged in), its isometries and bound rules, the
equal-time budget and the validation certificate callbacks, and the presets on CIFAR-10-shaped data."""

from __future__ import annotations

import json
import math
from functools import partial

import lightning as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from problems import compose_cfg, make_cifar_dataset
from stablenets.callbacks import CertifiedValidation
from stablenets.contracts import LipschitzBounded
from stablenets.losses import OffsetCrossEntropy
from stablenets.models import LipConvNet
from stablenets.nn.bounds import lipschitz_bound
from stablenets.nn.isometries import FirstChannels, SpatialPad, Translate
from stablenets.nn.layers import FAMILIES
from stablenets.robustness import empirical_lipschitz
from stablenets.tasks import ClassificationTask
from stablenets.train import train


def _tiny(family: str, in_shape=(1, 10, 10), seed: int = 0) -> LipConvNet:
    torch.manual_seed(seed)
    return LipConvNet(in_shape, 3, partial(FAMILIES[family][1]), base_width=4, blocks=2, layers=1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_gives_a_net_whose_searched_ratio_stays_below_its_bound(family):
    net = _tiny(family)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x = torch.rand(16, 1, 10, 10)
    for _ in range(3):  # bounds hold after training steps, not only at initialisation
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    assert isinstance(net, LipschitzBounded)
    with torch.no_grad():  # SOC's power iterations (one per training forward) catch up with the weights
        for _ in range(30):
            net(x)
    net.eval()
    bound = net.lipschitz_bound()
    assert 0 < bound <= 1 + 1e-4  # every part is 1-Lipschitz (up to the certified slack)
    ratio = empirical_lipschitz(net, x, n_pairs=16, ascent_steps=10, generator=torch.Generator().manual_seed(0))
    assert ratio <= bound * (1 + 1e-5), (family, ratio, bound)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_structure_of_size_xs_on_fashion_mnist():
    net = LipConvNet((1, 28, 28), 10, partial(FAMILIES["aol"][1]), size="XS")
    names = [n for n, _ in net.net.named_children()]
    assert names[:3] == ["pad", "zero_channels", "first_conv"] and names[-4:] == ["pool", "head", "flatten", "logits"]
    shape = (1, 1, 28, 28)
    x = torch.zeros(shape)
    widths = []
    for name, part in net.net.named_children():
        x = part(x)
        if name.startswith("block"):
            widths.append(tuple(x.shape[1:]))
    # 32x32 after padding; each block keeps half of its w 2^i channels and unshuffles: 2 w 2^i at half the size
    assert widths == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert x.shape == (1, 10)
    with pytest.raises(ValueError, match="size must be one of"):
        LipConvNet((1, 28, 28), 10, partial(FAMILIES["aol"][1]), size="XL")
    with pytest.raises(ValueError, match="convolutional layer family"):
        LipConvNet((1, 28, 28), 10, None)


def test_isometries_preserve_distances_and_report_one():
    x, y = torch.randn(4, 3, 7, 5), torch.randn(4, 3, 7, 5)
    pad = SpatialPad.to_multiple((3, 7, 5), 4)
    assert pad.out_shape((3, 7, 5)) == (3, 8, 8) == tuple(pad(x).shape[1:])
    center = Translate([0.1, 0.2, 0.3])
    for f in (pad, center):
        assert torch.allclose((f(x) - f(y)).flatten(1).norm(dim=1), (x - y).flatten(1).norm(dim=1))
        assert lipschitz_bound(f, (3, 7, 5)) == 1.0
    keep = FirstChannels(2)
    assert ((keep(x) - keep(y)).flatten(1).norm(dim=1) <= (x - y).flatten(1).norm(dim=1)).all()
    with pytest.raises(ValueError, match="only 3 channels"):
        FirstChannels(4)(x)


@pytest.mark.parametrize("out,shape", [(1, (2, 6, 6)), (2, (1, 5, 7)), (3, (1, 7, 7)), ((2, 3), (1, 6, 5))])
def test_adaptive_max_pool_rule_is_an_upper_bound_and_tight_for_a_global_pool(out, shape):
    pool = nn.AdaptiveMaxPool2d(out)
    bound = lipschitz_bound(pool, shape)
    x = torch.randn(256, *shape, dtype=torch.float64)
    ratio = empirical_lipschitz(pool, x, n_pairs=128, ascent_steps=30, generator=torch.Generator().manual_seed(0))
    assert ratio <= bound * (1 + 1e-9)
    # tight: a pixel shared by the most windows, the maximum of all of them, raised alone moves every one
    oh, ow = (out, out) if isinstance(out, int) else out
    member = torch.zeros(shape[1:])
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * shape[1]) // oh, -((-(i + 1) * shape[1]) // oh)
            c0, c1 = (j * shape[2]) // ow, -((-(j + 1) * shape[2]) // ow)
            member[r0:r1, c0:c1] += 1
    idx = divmod(int(member.argmax()), shape[2])
    a = torch.zeros(1, *shape, dtype=torch.float64)
    a[0, :, idx[0], idx[1]] = 1.0
    moved = (pool(2 * a) - pool(a)).norm() / a.norm()
    assert float(moved) == pytest.approx(bound, rel=1e-12)
    assert bound == math.sqrt(float(member.max()))


def test_validation_certified_accuracy_matches_the_margins():
    net = _tiny("aol", in_shape=(1, 8, 8))
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 3, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    task = ClassificationTask(net, partial(torch.optim.SGD, lr=0.0), loss=OffsetCrossEntropy(offset=0.5))
    cb = CertifiedValidation(eps=[0.0, 0.01])
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(task, loader, loader)
    net.eval()
    with torch.no_grad():
        logits = net(x)
    top = logits.topk(2, dim=1).values
    radius = (top[:, 0] - top[:, 1]).double() / (math.sqrt(2) * net.lipschitz_bound())
    correct = logits.argmax(1) == y
    assert trainer.callback_metrics["val/certified_acc"] == pytest.approx(correct.float().mean().item())
    assert trainer.callback_metrics["val/certified_acc/eps_0.01"] == pytest.approx(
        (correct & (radius > 0.01)).float().mean().item()
    )
    with pytest.raises(TypeError, match="cannot certify"):
        bad = ClassificationTask(nn.Linear(64, 3), partial(torch.optim.SGD, lr=0.0))
        pl.Trainer(
            max_epochs=1,
            callbacks=[cb],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            accelerator="cpu",
        ).fit(bad, DataLoader(TensorDataset(x.flatten(1), y), batch_size=16))


def test_cifar10_preset_runs_on_a_synthetic_set_with_a_budget(tmp_path):
    """The CIFAR-10 path of the protocol: 3x32x32 images, SGD + stretched one-cycle on a budget, offset CE,
    certificates with their audit, validation certified accuracy."""
    preset = compose_cfg(["experiment=layers_compared_cifar10"], tmp_path / "preset")
    assert preset.task.loss.offset == pytest.approx(2 * math.sqrt(2) * 36 / 255, abs=1e-4)
    assert preset.task.loss.temperature == 0.25 and preset.data.batch_size == 256
    assert preset.task.optimizer._target_ == "torch.optim.SGD" and preset.task.optimizer.momentum == 0.9
    assert (
        preset.task.scheduler._target_.endswith("OneCycleLR")
        and preset.task.scheduler.max_lr == preset.task.optimizer.lr
    )
    assert preset.model.size == "XS" and preset.model.layer._target_.endswith("CPLConv2d")
    root = make_cifar_dataset(tmp_path / "cifar", n=24)
    cfg = compose_cfg(
        [
            "experiment=layers_compared_cifar10",
            "model/layer=sll",
            "model.base_width=4",
            "model.layers=1",
            f"data.data_dir={root}",
            "data.n_train=64",
            "data.n_val=16",
            "data.n_test=16",
            "data.batch_size=32",
            "trainer.max_time=00:00:00:04",
            "trainer.max_epochs=3",
            "attack.n_iter=3",
            "attack.n_eval=16",
            "progress=none",
            "num_threads=1",
        ],
        tmp_path / "run",
    )
    metrics, objects = train(cfg)
    assert tuple(objects["net"].in_shape) == (3, 32, 32)
    assert metrics["test/lipschitz_bound"] <= 1 + 1e-4
    assert metrics["test/certificate_violations"] == 0
    assert 1 <= metrics["budget/steps"] <= 6 and metrics["budget/steps_reached"] == metrics["budget/steps"]
    assert "val/certified_acc" in metrics and metrics["memory/peak_mb"] > 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {row["eps"] for row in saved["robustness"]["curve"]} == {0.0, 0.1412, 0.2824, 0.4235, 1.0}
