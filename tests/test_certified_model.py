"""CertifiedConvNet: 1-Lipschitz by construction, searched; its parts' norms on their real operators; the
per-pair certificate is sound and never below the sqrt(2) one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from problems import fit, patch_images
from stablenets.models import CertifiedConvNet
from stablenets.nn import GradientFlowBlock, SpectralConv2d, SpectralLinear, lipschitz_bound
from stablenets.nn.activations import GroupSort
from stablenets.nn.isometries import ChannelPad, L2Pool2d
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_certified_model")

TOL = 1 + 1e-4
SMALL = dict(channels=(4, 16), blocks=(1, 1), hidden=[4, 8], dense=16)


@pytest.fixture(scope="module")
def trained():
    """A small net trained on patch images (12x12 -> 6x6 -> 3x3), with PowerMethodCallback."""
    torch.manual_seed(0)
    x, y = patch_images(192, 12, 4)
    net = CertifiedConvNet((1, 12, 12), 4, **SMALL)
    fit(net, x, y, optimizer=lambda params: torch.optim.Adam(params, lr=0.01), epochs=6)
    return net.eval(), x, y


def _power_norm(op, shape, iters=500) -> float:
    """‖A‖ of a linear map by power iteration on the map itself (adjoint by autograd): a lower bound."""
    u = torch.randn(1, *shape, dtype=torch.float64)
    for _ in range(iters):
        u = u.requires_grad_(True)
        out = op(u)
        (g,) = torch.autograd.grad(out, u, grad_outputs=out)
        u = (g / g.norm()).detach()
    return float(op(u).norm().detach())


def test_searched_ratio_below_the_bound_and_the_body_is_one_lipschitz(trained):
    net, x, _ = trained
    assert net.body_bound() <= 1.0 + 1e-9
    for head in ("rows", "spectral"):
        model = net if head == "rows" else CertifiedConvNet((1, 12, 12), 4, head="spectral", **SMALL).eval()
        bound = model.lipschitz_bound()
        if head == "spectral":
            assert bound <= 1.0 + 1e-9  # the whole net
        ratio = empirical_lipschitz(
            model, x[:48], n_pairs=96, ascent_steps=60, generator=torch.Generator().manual_seed(0)
        )
        assert ratio <= bound * TOL
        body = empirical_lipschitz(
            model.body, x[:48], n_pairs=96, ascent_steps=60, generator=torch.Generator().manual_seed(1)
        )
        assert 0.3 < body <= TOL  # 1-Lipschitz, and not vacuously so


def test_lifting_and_downsampling_norms_equal_their_claims():
    torch.manual_seed(0)
    cases = [(nn.PixelUnshuffle(2), (3, 8, 8), 1.0), (ChannelPad(3, 7), (3, 5, 5), 1.0)]
    for module, shape, claim in cases:  # isometries: every input keeps its norm, so the norm is exactly 1
        x = torch.randn(16, *shape, dtype=torch.float64)
        assert torch.allclose(module(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
        assert lipschitz_bound(module, shape) == claim
    lift = SpectralConv2d((4, 14, 14), 8, max_norm=1.0, exact=True).double().eval()
    lift.weight.data.mul_(7.0)  # whatever the stored scale, the applied map has norm 1 (up to the conv bound's excess)
    found = _power_norm(lambda u: nn.functional.conv2d(u, lift.effective_weight(), padding=1), (4, 14, 14))
    assert 0.97 <= found <= lift.lipschitz_bound() == 1.0
    pool = L2Pool2d(2)
    ratio = empirical_lipschitz(pool, torch.rand(32, 3, 6, 6, dtype=torch.float64), n_pairs=64, ascent_steps=60)
    assert 0.99 <= ratio <= pool.lipschitz_bound() * TOL
    sort = GroupSort(2)
    x = torch.randn(32, 6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(sort(x), x, grad_outputs=torch.ones(32, 6, dtype=torch.float64))
    assert torch.equal(g, torch.ones_like(g))  # a permutation in every region: gradients keep their norm


def test_orthogonal_dense_lift_keeps_every_direction(trained):
    net, _, _ = trained
    (lift,) = [m for m in net.body if isinstance(m, SpectralLinear)]
    s = torch.linalg.svdvals(lift.effective_weight().double())
    assert s.max() <= 1.0 + 1e-9 and s.min() >= 0.99  # Björck after each step: all singular values near 1
    assert all(b.n_steps == 1 for b in net.modules() if isinstance(b, GradientFlowBlock))


def test_pairwise_certificate_is_sound_and_never_below_sqrt2(trained):
    net, x, y = trained
    with torch.no_grad():
        logits = net(x)
    pairwise = certified_radius(logits, net.pairwise_lipschitz(), "pairwise")
    sqrt2 = certified_radius(logits, net.lipschitz_bound(), "sqrt2")
    assert (pairwise >= sqrt2 - 1e-12).all() and (pairwise > sqrt2 * (1 + 1e-6)).all()  # never below, here above
    correct = logits.argmax(1) == y
    assert correct.float().mean() > 0.8
    eps = [float(e) for e in torch.quantile(pairwise[correct].float(), torch.tensor([0.2, 0.5, 0.8]))]
    res = pgd_l2(
        net,
        x,
        y,
        eps,
        n_iter=60,
        loss="margin",
        random_start=True,
        restarts=2,
        generator=torch.Generator().manual_seed(0),
    )
    for i, e in enumerate(eps):
        assert not (res.broken[i] & correct & (pairwise > e)).any(), f"PGD broke a per-pair certificate at {e}"
    # direct search: the closest point found along the worst logit difference's gradient from each image
    z = x[correct][:32].clone().requires_grad_(True)
    k = net(z).argmax(1)
    for _ in range(100):  # descend the certified margin of the predicted class
        out = net(z)
        gap = out.gather(1, k[:, None]).squeeze(1) - out.scatter(1, k[:, None], float("-inf")).amax(1)
        (g,) = torch.autograd.grad(gap.sum(), z)
        with torch.no_grad():
            z -= 0.02 * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        z.requires_grad_(True)
        with torch.no_grad():
            changed = net(z).argmax(1) != k
            dist = (z - x[correct][:32]).flatten(1).norm(dim=1)
            assert not (changed & (dist < pairwise[correct][:32])).any()
