"""Section 3.2 / 6: gradient-flow blocks are 1-Lipschitz — searched for, not assumed."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from stablenets.callbacks import PowerMethodCallback, tracked_modules
from stablenets.models import ConvNonExpansiveNet, NonExpansiveNet
from stablenets.nn import NonExpansiveBlock, NonExpansiveConvBlock
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2
from stablenets.tasks import ClassificationTask

TOL = 1 + 1e-4


def _inflate(module: torch.nn.Module, std: float) -> None:
    for p in module.parameters():
        p.data.normal_(0, std)
    for _, m in tracked_modules(module):
        m.update_norm_estimate(n_iters=200)


def _one_lipschitz_part(net):
    """The part of a classifier that is claimed 1-Lipschitz: everything before the free head."""
    if isinstance(net, ConvNonExpansiveNet):
        return net.features
    return lambda x: _dense_features(net, x)


def _dense_features(net, x):
    z = net.lift(x.flatten(1))
    for layer in net.layers:
        z = layer(z)
    return z


@pytest.mark.parametrize("std", [0.3, 2.0])
def test_dense_block_is_nonexpansive_fresh(std):
    torch.manual_seed(0)
    block = NonExpansiveBlock(8, 16, T=1.0).double()
    _inflate(block, std)
    block.eval()
    x = torch.randn(64, 8, dtype=torch.float64) * 2
    assert block.n_steps >= 1
    assert empirical_lipschitz(block, x, n_pairs=256, ascent_steps=60) <= TOL


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softplus"])
def test_conv_block_is_nonexpansive_fresh(activation):
    torch.manual_seed(1)
    # float32: CPU convolution backward in float64 is orders of magnitude slower
    block = NonExpansiveConvBlock((3, 8, 8), hidden=4, T=2.0, activation=activation)
    _inflate(block, 0.4)  # several sub-steps, not hundreds
    block.eval()
    x = torch.rand(32, 3, 8, 8)
    assert empirical_lipschitz(block, x, n_pairs=64, ascent_steps=40) <= TOL


def test_planted_violation_is_found():
    """h = 2·(2/‖A‖²): the same search must find expansion."""
    torch.manual_seed(0)
    block = NonExpansiveBlock(6, 6, T=1.0).double()
    block.eval()
    h_ok = 2.0 / float(block.norm_bound()) ** 2
    block.T = 2 * h_ok  # one sub-step of twice the admissible size
    x = torch.randn(64, 6, dtype=torch.float64)
    ratio = empirical_lipschitz(lambda z: block(z, n_steps=1), x, n_pairs=256, ascent_steps=60)
    assert ratio > 1.2


def _train_with_callback(net, x, y, steps=50, lr=0.05):
    task = ClassificationTask(net, optimizer=lambda params: torch.optim.Adam(params, lr=lr))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    cb = PowerMethodCallback(n_iters=1, tol=1e-3, max_iters=20)
    trainer = L.Trainer(max_steps=steps, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, loader)
    return task, cb


def test_nonexpansive_after_training_steps_with_callback():
    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    net = NonExpansiveNet((4,), 3, depth=3, width=8, T=1.0)
    _, cb = _train_with_callback(net, x, y)
    assert cb.updates == 50
    for _, m in tracked_modules(net):  # the training estimate kept up with the weights
        assert float(m.sigma) >= 0.97 * float(m.norm_bound())
    net.eval()
    ratio = empirical_lipschitz(_one_lipschitz_part(net), x[:128], n_pairs=256, ascent_steps=60)
    assert ratio <= TOL
    assert empirical_lipschitz(net, x[:128], n_pairs=256, ascent_steps=60) <= net.lipschitz_bound() * TOL


def test_conv_net_after_training_steps_with_callback():
    torch.manual_seed(0)
    x, y = torch.rand(128, 1, 12, 12), torch.randint(0, 4, (128,))
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4, 6), blocks=1)
    _train_with_callback(net, x, y, steps=50, lr=0.05)
    net.eval()
    assert empirical_lipschitz(_one_lipschitz_part(net), x[:32], n_pairs=64, ascent_steps=40) <= TOL
    assert empirical_lipschitz(net, x[:32], n_pairs=64, ascent_steps=40) <= net.lipschitz_bound() * TOL


def test_no_adversarial_example_inside_certified_radius():
    torch.manual_seed(0)
    centers = torch.randn(3, 4) * 2
    y = torch.randint(0, 3, (300,))
    x = centers[y] + 0.5 * torch.randn(300, 4)
    net = NonExpansiveNet((4,), 3, depth=2, width=8, constrain_head=True)
    _train_with_callback(net, x, y, steps=150, lr=0.02)
    net.eval()
    bound = net.lipschitz_bound()
    with torch.no_grad():
        radius = certified_radius(net(x), bound)
    eps = [0.05, 0.1, 0.2, 0.4, 0.8]
    res = pgd_l2(net, x, y, eps, n_iter=100, clip=None, loss="margin", restarts=2, random_start=True)
    correct = net(x).argmax(1) == y
    for i, e in enumerate(eps):
        certified = correct & (radius > e)
        assert certified.any() or e > 0.2
        assert not (res.broken[i] & certified).any(), f"PGD broke a certified point at eps={e}"


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 12, 12), torch.randint(0, 4, (64,))
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1)
    task, _ = _train_with_callback(net, x, y, steps=10)
    path = tmp_path / "m.ckpt"
    task.trainer.save_checkpoint(path)
    fresh = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1)
    restored = ClassificationTask(fresh, optimizer=None)
    restored.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    net.eval(), fresh.eval()
    for (_, a), (_, b) in zip(tracked_modules(net), tracked_modules(fresh)):
        assert torch.equal(a.u, b.u) and torch.equal(a.sigma, b.sigma)
    assert torch.equal(net(x), fresh(x))
    assert net.lipschitz_bound() == fresh.lipschitz_bound()


@pytest.mark.parametrize("conv", [False, True])
def test_gradcheck_block(conv):
    torch.manual_seed(0)
    block = (NonExpansiveConvBlock((2, 4, 4), activation="tanh") if conv else NonExpansiveBlock(3, 5, activation="tanh")).double()
    block.norm_bound()
    block.eval()
    x = torch.randn(2, *((2, 4, 4) if conv else (3,)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
    assert torch.autograd.gradcheck(lambda w: torch.nn.functional.conv2d(x, w) if conv else x @ w.T,
                                    (block.weight.detach().clone().requires_grad_(),))


def test_norm_cap_bounds_substeps_and_keeps_the_guarantee():
    torch.manual_seed(0)
    block = NonExpansiveConvBlock((2, 8, 8), T=1.0, max_norm=1.4)
    _inflate(block, 1.5)
    assert float(block.norm_bound()) > 5  # uncapped, this would need > 12 sub-steps
    block.eval()
    assert block.n_steps == 1
    x = torch.rand(32, 2, 8, 8)
    assert empirical_lipschitz(block, x, n_pairs=64, ascent_steps=40) <= TOL


def test_lagging_estimate_is_caught_by_the_bound_check():
    """An estimate that fell behind (as when Adam inflates ‖A‖ faster than one iteration per step follows)."""
    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=2)
    cb = PowerMethodCallback(check_every_n_steps=1)
    cb._check_against_bounds(net)  # records each layer's bound excess for a converged estimate
    before = cb.corrections
    block = net.features[1]
    true = float(block.norm_bound())
    with torch.no_grad():
        block.conv.weight.mul_(3.0)  # the weight runs away ...
    block.update_norm_estimate(n_iters=1)  # ... the warm start barely moves: the estimate lags
    block.sigma.mul_(0.7)
    assert float(block.sigma) < 0.9 * float(block.norm_bound())
    cb._check_against_bounds(net)
    assert cb.corrections == before + 1
    assert float(block.sigma) >= float(block.norm_bound()) / 1.05 and float(block.norm_bound()) > 2.5 * true
    state = cb.state_dict()
    fresh = PowerMethodCallback()
    fresh.load_state_dict(state)
    assert fresh.corrections == cb.corrections and fresh._excess == cb._excess


def test_projection_keeps_the_function_and_the_stored_norm_at_the_cap():
    """After a step inflates a capped weight, ``project_`` rescales it to the cap without changing the net."""
    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1, max_norm=1.5)
    lift, block = net.features[0], net.features[1]
    with torch.no_grad():
        lift.conv.weight.mul_(5.0)
        block.conv.weight.mul_(5.0)
    for m in (lift, block):
        m.update_norm_estimate(n_iters=200)
    x = torch.rand(16, 1, 12, 12)
    before = net(x)  # training mode: the forward uses the estimates
    assert lift.project_() and block.project_()
    assert float(lift.sigma) == 1.0 and float(block.sigma) == 1.5
    assert torch.allclose(net(x), before, atol=1e-5)
    assert float(lift.norm_bound()) <= 1.02 and float(block.norm_bound()) <= 1.5 * 1.02  # the stored weights
    assert not block.project_()  # nothing left to do
    _, cb = _train_with_callback(net, torch.rand(64, 1, 12, 12), torch.randint(0, 4, (64,)), steps=20, lr=0.2)
    assert cb.projections > 0
    for m in (lift, block):  # Adam at a large rate cannot run the stored weights away
        assert float(m.norm_bound()) <= m.max_norm * 1.1


def test_free_lifts_enter_the_bound():
    torch.manual_seed(0)
    x, y = torch.rand(128, 1, 12, 12), torch.randint(0, 4, (128,))
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4, 6), blocks=1, lift_max_norm=None)
    with torch.no_grad():
        for lift in (net.features[0], net.features[3]):
            lift.conv.weight.mul_(4.0)
    _train_with_callback(net, x, y, steps=30, lr=0.05)
    net.eval()
    lifts = float(net.features[0].norm_bound()) * float(net.features[3].norm_bound())
    assert lifts > 1.5  # the lifts are not normalised ...
    features = empirical_lipschitz(net.features, x[:32], n_pairs=64, ascent_steps=40)
    assert features <= lifts / 4 * TOL  # ... and their norms (times the pools' 1/2 each) bound the features
    assert empirical_lipschitz(net, x[:32], n_pairs=64, ascent_steps=40) <= net.lipschitz_bound() * TOL
    for cap in (None, 4.0):  # a prescribed L holds, whatever the lifts' cap
        constrained = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4, 6), blocks=1, lift_max_norm=cap, L=2.0)
        _inflate(constrained, 1.0)
        constrained.eval()
        assert constrained.lipschitz_bound() <= 2.0 * TOL
        assert empirical_lipschitz(constrained, x[:32], n_pairs=64, ascent_steps=40) <= 2.0 * TOL
