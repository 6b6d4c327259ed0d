"""Certificates hold whatever the optimizer, the checkpoint, the dtype or the architecture: every reported
bound is searched for violations, and a planted wrong bound must be caught."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from problems import blobs, compose_cfg, fit, patch_images
from stablenets.models import ConvNonExpansiveNet, InvNet, NonExpansiveNet
from stablenets.nn import SpectralConv2d, SpectralLinear, UnknownLayerError, lipschitz_bound
from stablenets.nn.norms import round_down, round_up
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2
from stablenets.runner.config import build_objects
from stablenets.runner.errors import CertificateError
from stablenets.train import train

TOL = 1 + 1e-4
OPTIMIZERS = {
    "adam_fused": lambda params: torch.optim.Adam(params, lr=0.05, fused=True),
    "adam_foreach": lambda params: torch.optim.Adam(params, lr=0.05, foreach=True),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.2, momentum=0.9),
    "data_write": lambda params: torch.optim.Adam(params, lr=0.05),
}


def _write_data(net: nn.Module) -> None:
    """In-place ``.data`` writes (no version bump), as user code or a custom optimizer may do."""
    for m in net.modules():
        if isinstance(m, (SpectralLinear, SpectralConv2d)):
            m.weight.data.mul_(1.5)


def _dense():
    x, y = blobs(300, 4, 3)
    return NonExpansiveNet((4,), 3, depth=3, width=8, L=1.0), x, y, 8


def _conv():
    x, y = patch_images(96, 12, 4)
    return ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=2, lift_max_norm=None), x, y, 3


def _invnet():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    y = x @ torch.tensor([[1.25, 1.0], [1.0, 1.25]]) + 0.1 * torch.randn(200, 2, generator=g)
    return InvNet((2,), 2, L=3.0), y, x, 8


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("problem", ["dense", "conv", "invnet"])
def test_bound_holds_after_any_optimizer(problem, optimizer):
    torch.manual_seed(0)
    net, x, y, epochs = {"dense": _dense, "conv": _conv, "invnet": _invnet}[problem]()
    fit(net, x, y, OPTIMIZERS[optimizer], epochs=epochs, task="inverse" if problem == "invnet" else "classification")
    if optimizer == "data_write":
        _write_data(net)
    net.eval()
    bound = net.lipschitz_bound()
    ratio = empirical_lipschitz(net, x[:48], n_pairs=96, ascent_steps=40, generator=torch.Generator().manual_seed(1))
    assert ratio <= bound * TOL, (ratio, bound)
    assert ratio >= 0.1 * bound  # the search is not vacuous
    if problem == "invnet":
        return
    with torch.no_grad():
        logits = net(x)
    radius = certified_radius(logits, bound)
    correct = logits.argmax(1) == y
    eps = [float(e) for e in torch.quantile(radius[correct].float(), torch.tensor([0.25, 0.5, 0.75]))]
    res = pgd_l2(
        net,
        x,
        y,
        eps,
        n_iter=50,
        clip=None if problem == "dense" else (0.0, 1.0),
        loss="margin",
        random_start=True,
        restarts=2,
        generator=torch.Generator().manual_seed(0),
    )
    for i, e in enumerate(eps):
        assert not (res.broken[i] & correct & (radius > e)).any(), f"PGD broke a certificate at eps={e}"


def test_cached_bound_follows_every_kind_of_change(tmp_path):
    """Fused optimizer steps, ``.data`` writes, loading a checkpoint, a dtype or device change: the eval
    bound is the certified norm of the weights as they are now."""
    torch.manual_seed(0)
    layer = SpectralConv2d((2, 8, 8), 3).eval()
    fresh = lambda: float(layer._certify(layer.weight.detach()))  # noqa: E731
    assert layer.lipschitz_bound() == fresh()
    layer.weight.grad = torch.randn_like(layer.weight)
    torch.optim.Adam([layer.weight], lr=0.5, fused=True).step()
    assert layer.lipschitz_bound() == fresh()
    layer.weight.data.mul_(3.0)
    assert layer.lipschitz_bound() == fresh()
    other = SpectralConv2d((2, 8, 8), 3)
    layer.load_state_dict(other.state_dict())
    assert layer.lipschitz_bound() == pytest.approx(other.eval().lipschitz_bound(), rel=1e-12)
    layer.double()
    assert layer.lipschitz_bound() == fresh()


def test_eval_scale_rounds_down_and_bounds_round_up():
    value = torch.tensor(1 / 3, dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert round_up(value, dtype).double() >= value
        assert round_down(value, dtype).double() <= value
        assert round_up(value, dtype) > round_down(value, dtype)
    # a capped layer's eval-mode weight is never above its reported bound, in any dtype
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        layer = SpectralLinear(6, 5, max_norm=0.7).to(dtype).eval()
        layer.weight.data.mul_(10.0)
        applied = torch.linalg.matrix_norm(layer.effective_weight().double(), 2)
        assert applied <= layer.lipschitz_bound()


@pytest.mark.parametrize(
    "pool,shape",
    [
        (nn.MaxPool2d(3, stride=1), (2, 7, 7)),
        (nn.MaxPool2d(2), (2, 8, 8)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 9, 9)),
        (nn.AvgPool2d(2), (2, 8, 8)),
        (nn.AvgPool2d(2, ceil_mode=True), (1, 7, 7)),
        (nn.AvgPool2d((2, 1)), (1, 6, 6)),
        (nn.AvgPool2d(3, stride=1, padding=1), (1, 6, 6)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 7, 7)),
        (nn.AdaptiveAvgPool2d(3), (1, 7, 7)),
    ],
)
def test_pooling_bounds_are_upper_bounds_and_tight(pool, shape):
    bound = lipschitz_bound(pool, shape)
    x = torch.rand(32, *shape, dtype=torch.float64)
    if isinstance(pool, nn.MaxPool2d):  # non-linear: search the ratio
        found = empirical_lipschitz(
            pool, x, n_pairs=128, ascent_steps=200, lr=0.05, generator=torch.Generator().manual_seed(0)
        )
        assert found <= bound * TOL
        assert found >= 0.9 * bound  # and the rule is not loose
        return
    # linear: power iteration on the operator itself (its adjoint by autograd) approaches the norm from below
    u = torch.rand(1, *shape, dtype=torch.float64)
    for _ in range(3000):
        u = u.requires_grad_(True)
        out = pool(u)
        (g,) = torch.autograd.grad(out, u, grad_outputs=out)
        u = (g / g.norm()).detach()
    found = float(pool(u).norm())
    assert found <= bound * (1 + 1e-9)
    assert bound <= found * (1 + 1e-6)


def test_pooling_values_the_old_rules_got_wrong():
    assert lipschitz_bound(nn.MaxPool2d(3, stride=1), (1, 7, 7)) == pytest.approx(3.0)
    assert lipschitz_bound(nn.AvgPool2d(2, ceil_mode=True), (1, 7, 7)) == pytest.approx(1.0)
    assert lipschitz_bound(nn.AvgPool2d((2, 1)), (1, 6, 6)) == pytest.approx(1 / math.sqrt(2))
    assert lipschitz_bound(nn.AvgPool2d(2), (1, 6, 6)) == pytest.approx(0.5)


@pytest.mark.parametrize("module", [nn.GELU(), nn.Conv2d(2, 2, 3, groups=2), nn.LayerNorm(4), nn.Softmax(1)])
def test_unknown_layers_raise(module):
    with pytest.raises(UnknownLayerError, match=type(module).__name__):
        lipschitz_bound(nn.Sequential(nn.Identity(), module), (2, 4, 4) if "Conv" in type(module).__name__ else (4,))


@pytest.mark.parametrize("L", [0.5, 1.0, 2.0, 8.0])
@pytest.mark.parametrize("model", ["nonexpansive", "conv_nonexpansive", "certified_conv"])
def test_prescribed_L_means_L(model, L, tmp_path):
    size = {
        "nonexpansive": ["model.depth=2"],
        "conv_nonexpansive": ["model.channels=[3,4]"],
        "certified_conv": ["model.channels=[4,16]", "model.hidden=[4,8]", "model.dense=16", "model.head=spectral"],
    }
    cfg = compose_cfg([f"model={model}", "lipschitz=bound", f"lipschitz.L={L}", *size[model]], tmp_path / "run")
    if model != "nonexpansive":  # the model group's config as the runner builds it, on small images
        from hydra.utils import instantiate

        net = instantiate(cfg.model, in_shape=(1, 12, 12), out_dim=4, L=L)
        x = torch.rand(32, 1, 12, 12)
    else:
        net = build_objects(cfg)["net"]
        x = torch.randn(32, 4)
    if model == "nonexpansive":  # away from the initialisation (conv: large weights only add sub-steps)
        torch.manual_seed(0)
        for p in net.parameters():
            p.data.normal_(0, 1.0)
    net.eval()
    bound = net.lipschitz_bound()
    assert bound <= L and bound == pytest.approx(L, rel=1e-6)
    ratio = empirical_lipschitz(net, x, n_pairs=64, ascent_steps=40, generator=torch.Generator().manual_seed(0))
    assert 0.02 * L < ratio <= L * TOL


def test_planted_wrong_bound_fails_the_run(tmp_path):
    """A head whose reported norm is halved: the curve's audit attacks certified pairs, finds breaks,
    records them in results.json, and the run fails."""
    cfg = compose_cfg(
        [
            "data=swiss_roll",
            "data.embed_dim=2",
            "model=nonexpansive",
            "model._target_=problems.HalvedHeadNet",
            "lipschitz=bound",
            "lipschitz.L=1",
            "trainer.max_epochs=15",
            "attack=pgd_l2",
            "attack.eps=[0,0.02,0.05,0.1,0.2]",
            "attack.n_iter=30",
            "attack.n_eval=300",
            "attack.audit=200",
            "logger=none",
        ],
        tmp_path,
    )
    with pytest.raises(CertificateError, match="certificate audit broke"):
        train(cfg)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["metrics"]["test/certificate_violations"] > 0
    assert (tmp_path / "error.txt").exists()  # listed as failed by stablenets-collect, not skipped on relaunch
