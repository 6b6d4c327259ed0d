"""L2-PGD (Section 6.2): feasibility, batching over ε, agreement with torchattacks, consistency with certificates."""

from __future__ import annotations

import pytest
import torch

from stablenets.models import ConvResNet, NonExpansiveNet
from stablenets.robustness import autoattack_l2, certified_accuracy, pgd_l2, pgd_l2_per_eps

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_pgd")

EPS = [0.0, 0.05, 0.1, 0.3, 0.6, 1.0]


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    net = ConvResNet((1, 12, 12), 4, channels=(4,), blocks=1).eval()
    x = torch.rand(48, 1, 12, 12)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::5] = (y[::5] + 1) % 4  # some points misclassified from the start
    return net, x, y


def test_perturbations_stay_in_ball_and_box(image_model):
    net, x, y = image_model
    res = pgd_l2(
        net, x, y, EPS, n_iter=20, keep_delta=True, random_start=True, generator=torch.Generator().manual_seed(0)
    )
    for i, e in enumerate(EPS):
        norms = res.delta[i].flatten(1).norm(dim=1)
        assert (norms <= e + 1e-6).all()
        adv = x + res.delta[i]
        assert adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():  # a recorded break is a real adversarial example
            assert ((net(adv).argmax(1) != y) == res.broken[i]).all()


def test_eps_zero_is_clean_accuracy(image_model):
    net, x, y = image_model
    res = pgd_l2(net, x, y, EPS, n_iter=5)
    with torch.no_grad():
        assert res.accuracy[0] == float((net(x).argmax(1) == y).float().mean())


def test_batched_over_eps_equals_one_eps_at_a_time(image_model):
    net, x, y = image_model
    batched = pgd_l2(net, x, y, EPS, n_iter=15, monotone=False)
    single = [pgd_l2(net, x, y, [e], n_iter=15, monotone=False).accuracy[0] for e in EPS]
    assert batched.accuracy == pytest.approx(single, abs=1 / len(x) + 1e-9)
    monotone = pgd_l2(net, x, y, EPS, n_iter=15)
    assert all(a <= b + 1e-9 for a, b in zip(monotone.accuracy, batched.accuracy))  # only ever stronger
    assert all(a >= b - 1e-9 for a, b in zip(monotone.accuracy, monotone.accuracy[1:]))  # non-increasing in ε


def test_chunks_give_the_same_curve(image_model):
    net, x, y = image_model
    whole = pgd_l2(net, x, y, EPS, n_iter=15, monotone=False)
    chunked = pgd_l2(net, x, y, EPS, n_iter=15, monotone=False, chunk_size=7)
    assert chunked.accuracy == pytest.approx(whole.accuracy, abs=1 / len(x) + 1e-9)
    assert all(p.is_contiguous() for p in net.parameters())  # the channels_last layout was undone


def test_certified_pairs_are_not_attacked_and_change_nothing():
    from stablenets.models import ConvNonExpansiveNet
    from stablenets.robustness import certified_radius

    torch.manual_seed(0)
    net = ConvNonExpansiveNet((1, 12, 12), 4, channels=(4,), blocks=1, L=1.0).eval()
    x = torch.rand(64, 1, 12, 12)
    with torch.no_grad():
        logits = net(x)
    y = logits.argmax(1)
    y[::7] = (y[::7] + 1) % 4
    eps = [0.0, 0.002, 0.005, 0.01, 0.05]
    radius = certified_radius(logits, net.lipschitz_bound())
    robust = (logits.argmax(1) == y) & (radius > torch.tensor(eps)[:, None])
    assert robust[1:].any() and not robust[1:].all()  # the mask matters here
    full = pgd_l2(net, x, y, eps, n_iter=30, loss="margin")
    skipped = pgd_l2(net, x, y, eps, n_iter=30, loss="margin", robust=robust, chunk_size=16)
    assert not (full.broken & robust).any()  # the attack never breaks a certificate
    assert skipped.accuracy == full.accuracy
    assert skipped.forward_passes < full.forward_passes
    everything = pgd_l2(net, x, y, eps, n_iter=5, robust=torch.ones_like(robust))
    assert everything.accuracy[-1] == pytest.approx(float((y == logits.argmax(1)).float().mean()))  # no free pass


def test_agrees_with_torchattacks(image_model):
    import torchattacks  # a dependency of the package: never skipped

    net, x, y = image_model
    for e in (0.1, 0.3, 0.6):
        ours = pgd_l2_per_eps(net, x, y, [e], n_iter=20)[0]
        atk = torchattacks.PGDL2(net, eps=e, alpha=2.5 * e / 20, steps=20, random_start=False)
        adv = atk(x, y)
        with torch.no_grad():
            theirs = float((net(adv).argmax(1) == y).float().mean())
        assert abs(ours - theirs) <= 0.01 + 1e-9


def test_inputs_outside_the_box_are_refused():
    net = NonExpansiveNet((2,), 2, depth=1, width=4)
    with pytest.raises(ValueError, match="outside the box"):
        pgd_l2(net, torch.tensor([[-0.5, 0.3]]), torch.tensor([0]), [0.1], clip=(0.0, 1.0))


def test_certified_below_autoattack_below_pgd_below_clean():
    """On a trained small non-expansive net: certified <= AutoAttack <= PGD <= clean at every ε."""
    from stablenets.models import ConvNonExpansiveNet

    torch.manual_seed(0)
    y = torch.randint(0, 10, (400,))  # 10 classes: AutoAttack's targeted attacks use 9 target classes
    x = torch.rand(400, 1, 28, 28) * 0.3  # 28x28: torchattacks' Square attack needs room for its squares
    for k in range(10):  # a bright 6x6 patch at a class-specific place
        r, c = 7 * (k // 4), 7 * (k % 4)
        x[y == k, :, r : r + 6, c : c + 6] = 1.0
    net = ConvNonExpansiveNet((1, 28, 28), 10, channels=(4,), blocks=1, L=4.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.multi_margin_loss(net(x), y).backward()
        opt.step()
        for m in net.modules():
            if hasattr(m, "update_norm_estimate"):
                m.update_norm_estimate(1, 1e-3, 20)
    net.eval()
    xt, yt = x[:10], y[:10]
    eps = [0.0, 1.0]  # AutoAttack's Square attack spends 5000 queries per robust point and ε
    pgd = pgd_l2(net, xt, yt, eps, n_iter=50).accuracy
    with torch.no_grad():
        cert = certified_accuracy(net(xt), yt, net.lipschitz_bound(), eps)
    aa = autoattack_l2(net, xt, yt, eps)
    assert pgd[0] > 0.9 and cert[1] > 0  # trained, and some certificates are non-trivial
    for c, a, p in zip(cert, aa, pgd):
        assert c <= a + 1e-9 and a <= p + 1e-9 and p <= pgd[0] + 1e-9
