"""Section 3.2 / 6: gradient-flow blocks are 1-Lipschitz — searched for, not assumed."""

from __future__ import annotations

import pytest
import torch

from problems import blobs, fit, patch_images
from stablenets.callbacks import PowerMethodCallback, tracked_modules
from stablenets.models import ConvNonExpansiveNet, NonExpansiveNet
from stablenets.nn import NonExpansiveBlock, NonExpansiveConvBlock
from stablenets.nn.gradient_flow import substeps_for
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2
from stablenets.tasks import ClassificationTask

TOL = 1 + 1e-4


def _inflate(module: torch.nn.Module, std: float) -> None:
    for p in module.parameters():
        p.data.normal_(0, std)
    for _, m in tracked_modules(module):
        m.update_norm_estimate(n_iters=200)


@pytest.mark.parametrize("std", [0.3, 2.0])
def test_dense_block_is_nonexpansive_fresh(std):
    torch.manual_seed(0)
    block = NonExpansiveBlock(8, 16, T=1.0).double()
    _inflate(block, std)
    block.eval()
    x = torch.randn(64, 8, dtype=torch.float64) * 2
    assert block.n_steps >= (3 if std == 2.0 else 1)  # large weights: several sub-steps
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
    block.T = 4.0 / block.op.lipschitz_bound() ** 2  # one sub-step of twice the admissible size
    x = torch.randn(64, 6, dtype=torch.float64)
    ratio = empirical_lipschitz(lambda z: block(z, n_steps=1), x, n_pairs=256, ascent_steps=60)
    assert ratio > 1.2


def test_nonexpansive_after_training_steps_with_callback():
    torch.manual_seed(0)
    x, y = blobs(256, 4, 3)
    net = NonExpansiveNet((4,), 3, depth=3, width=8, T=1.0)
    fit(net, x, y, steps=50)
    for _, m in tracked_modules(net):  # the training estimate kept up with the weights
        assert float(m.norm_estimate) >= 0.97 * float(m.certified_norm())
    net.eval()
    assert empirical_lipschitz(net.features, x[:128], n_pairs=256, ascent_steps=60) <= TOL
    assert empirical_lipschitz(net, x[:128], n_pairs=256, ascent_steps=60) <= net.lipschitz_bound() * TOL


def test_training_substeps_follow_the_estimate_without_reading_it_in_the_forward():
    """The callback sets each block's training sub-step count; the forward pass uses that integer."""
    torch.manual_seed(0)
    x, y = blobs(256, 4, 3)
    net = NonExpansiveNet((4,), 3, depth=2, width=8)
    fit(net, x, y, optimizer=lambda params: torch.optim.Adam(params, lr=0.3), steps=40)
    for block in net.layers:
        # eq. (19) with the training margin: h = T/n <= 2/(k (1 + margin) est²), with the fewest sub-steps n
        limit = 2 / (block.k * (1 + block.margin) * float(block.op.norm_estimate) ** 2)
        n = block.n_steps
        assert block.T / n <= limit * (1 + 1e-12)
        assert n == 1 or block.T / (n - 1) > limit
        assert n >= 2  # the large rate inflated the norms: more than one sub-step
    net.load_state_dict(net.state_dict())  # a load refreshes the count from the loaded estimate
    assert all(b.n_steps >= 2 for b in net.layers)


def test_conv_net_after_training_steps_with_callback():
    torch.manual_seed(0)
    x, y = patch_images(128, 12, 4)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4, 6), blocks=1)
    fit(net, x, y, steps=50)
    net.eval()
    features = net.body_bound()
    assert empirical_lipschitz(net.features, x[:32], n_pairs=64, ascent_steps=40) <= features * TOL
    assert empirical_lipschitz(net, x[:32], n_pairs=64, ascent_steps=40) <= net.lipschitz_bound() * TOL


def test_no_adversarial_example_inside_certified_radius():
    torch.manual_seed(0)
    x, y = blobs(300, 4, 3)
    net = NonExpansiveNet((4,), 3, depth=2, width=8, constrain_head=True)
    fit(net, x, y, optimizer=lambda params: torch.optim.Adam(params, lr=0.02), steps=150)
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
    x, y = patch_images(64, 12, 4)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1)
    task, _ = fit(net, x, y, steps=10)
    path = tmp_path / "m.ckpt"
    task.trainer.save_checkpoint(path)
    fresh = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1)
    restored = ClassificationTask(fresh, optimizer=None)
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for (_, a), (_, b) in zip(tracked_modules(net), tracked_modules(fresh)):
        assert torch.equal(a.u, b.u) and torch.equal(a.norm_estimate, b.norm_estimate)
    assert [b.n_steps for b in net.features if hasattr(b, "n_steps")] == [
        b.n_steps for b in fresh.features if hasattr(b, "n_steps")
    ]
    net.eval(), fresh.eval()
    assert torch.equal(net(x), fresh(x))
    assert net.lipschitz_bound() == fresh.lipschitz_bound()


@pytest.mark.parametrize("conv", [False, True])
def test_gradcheck_block(conv):
    torch.manual_seed(0)
    block = (
        NonExpansiveConvBlock((2, 4, 4), activation="tanh") if conv else NonExpansiveBlock(3, 5, activation="tanh")
    ).double()
    block.eval()
    x = torch.randn(2, *((2, 4, 4) if conv else (3,)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


def test_norm_cap_bounds_substeps_and_keeps_the_guarantee():
    torch.manual_seed(0)
    block = NonExpansiveConvBlock((2, 8, 8), T=1.0, max_norm=1.4)
    _inflate(block, 1.5)
    assert float(block.op.certified_norm()) > 5  # uncapped, this would need > 12 sub-steps
    block.eval()
    assert block.n_steps == 1
    x = torch.rand(32, 2, 8, 8)
    assert empirical_lipschitz(block, x, n_pairs=64, ascent_steps=40) <= TOL


def test_lagging_estimate_is_caught_by_the_lag_check():
    """An estimate that fell behind (as when Adam inflates ‖A‖ faster than one iteration per step follows) is
    raised by the check's extra iterations and re-converged; estimates that are current are not."""
    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=2)
    cb = PowerMethodCallback(check_every_n_steps=1)
    cb._check_lag(net)  # converged at construction: nothing to correct
    assert cb.corrections == 0
    block = net.features[1]
    true = float(block.op.certified_norm())
    with torch.no_grad():
        block.op.weight.mul_(3.0)  # the weight runs away ...
        block.op.weight[0].mul_(2.0)  # ... and its top direction moves
    block.op.update_norm_estimate(n_iters=1)  # ... the warm start barely moves: the estimate lags
    block.op.norm_estimate.mul_(0.7)
    assert float(block.op.norm_estimate) < 0.9 * float(block.op.certified_norm())
    cb._check_lag(net)
    assert cb.corrections == 1
    assert (
        float(block.op.norm_estimate) >= float(block.op.certified_norm()) / 1.05
        and float(block.op.certified_norm()) > 2.5 * true
    )
    assert block._n_train == substeps_for(
        block.op.constrained_norm(float(block.op.norm_estimate)), block.T, block.k, block.margin
    )  # the sub-step count follows the corrected estimate
    fresh = PowerMethodCallback()
    fresh.load_state_dict(cb.state_dict())
    assert fresh.corrections == cb.corrections
    fresh.load_state_dict({"excess": {"a": 1.0}, "corrections": 3})  # a checkpoint of the bound check
    assert fresh.corrections == 3


def test_an_estimate_stuck_on_a_lower_singular_pair_is_restarted_from_noise():
    """A circular convolution's singular vectors are Fourier modes: a ``u`` without the top mode (lost to rounding, or
    to subnormals flushed to zero, while another mode led) keeps every warm-started iteration on a lower singular
    value — the lag check's extra iterations cannot see it.  The comparison with the certified norm does, restarts
    ``u`` from noise, and finds the top; a layer whose certified bound is loose (zero padding) is not restarted
    again for that looseness."""
    from stablenets.nn.layers import CPLConv2d

    torch.manual_seed(0)
    layer = CPLConv2d((2, 8, 8), padding_mode="circular")
    op = layer.op
    with torch.no_grad():  # u: one constant image per channel (the zero frequency only) ...
        op.u.copy_(torch.ones_like(op.u) / op.u.numel() ** 0.5)
        op.weight.copy_(torch.tensor([[1.0, -1.0, 1.0]]).expand(2, 2, 3, 3) * torch.eye(2)[:, :, None, None])
        op.weight[:, :, 1].mul_(-1)  # ... while the kernel's symbol vanishes at zero frequency and peaks at (π, π)
    op.update_norm_estimate(n_iters=50)
    assert float(op.norm_estimate) < 0.5 * float(op.certified_norm())  # stuck
    cb = PowerMethodCallback(check_every_n_steps=1)
    cb._check_lag(layer)
    assert cb.corrections == 0  # the extra iterations see no rise
    cb._check_stuck(layer)
    assert cb.restarts == 1 and float(op.norm_estimate) == pytest.approx(float(op.certified_norm()), rel=1e-5)
    assert layer._n_train == 1
    loose = CPLConv2d((8, 4, 4))  # zero padding on a small grid: the certified bound is above the norm
    cb._check_stuck(loose)  # restarted at most once: its gap is known after it
    restarts = cb.restarts
    cb._check_stuck(loose)
    assert cb.restarts == restarts <= 2


def test_projection_keeps_the_function_and_the_stored_norm_at_the_cap():
    """After a step inflates a capped weight, ``project_`` rescales it to the cap without changing the net."""
    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1, max_norm=1.5)
    lift, block = net.features[0], net.features[1].op
    with torch.no_grad():
        lift.weight.mul_(5.0)
        block.weight.mul_(5.0)
    for m in (lift, block):
        m.update_norm_estimate(n_iters=200)
    x = torch.rand(16, 1, 12, 12)
    before = net(x)  # training mode: the forward uses the estimates
    assert bool(lift.project_()) and bool(block.project_())
    assert float(lift.norm_estimate) == pytest.approx(1.0) and float(block.norm_estimate) == pytest.approx(1.5)
    assert torch.allclose(net(x), before, atol=1e-5)
    assert float(lift.certified_norm()) <= 1.03 and float(block.certified_norm()) <= 1.5 * 1.03  # the stored weights
    assert not bool(block.project_())  # nothing left to do
    _, cb = fit(net, *patch_images(64, 12, 4), optimizer=lambda params: torch.optim.Adam(params, lr=0.2), steps=20)
    assert cb.projections > 0
    for m in (lift, block):  # Adam at a large rate cannot run the stored weights away
        assert float(m.certified_norm()) <= m.max_norm * 1.1


def test_free_lifts_enter_the_bound():
    torch.manual_seed(0)
    x, y = patch_images(128, 12, 4)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4, 6), blocks=1, lift_max_norm=None)
    with torch.no_grad():
        for lift in (net.features[0], net.features[3]):
            lift.weight.mul_(4.0)
    fit(net, x, y, steps=30)
    net.eval()
    lifts = net.features[0].lipschitz_bound() * net.features[3].lipschitz_bound()
    assert lifts > 1.5  # the lifts are not normalised ...
    assert net.body_bound() == pytest.approx(lifts / 4)  # ... their norms times the pools' 1/2 bound the features
    features = empirical_lipschitz(net.features, x[:32], n_pairs=64, ascent_steps=40)
    assert features <= net.body_bound() * TOL
    assert empirical_lipschitz(net, x[:32], n_pairs=64, ascent_steps=40) <= net.lipschitz_bound() * TOL
