"""Each loss of stablenets.losses: its value and gradient on a small example worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stablenets.losses import HKR, CertifiedHinge, CrossEntropy, MultiMargin, OffsetCrossEntropy

Z = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.2]]  # two samples, three classes
Y = [0, 2]


def _run(loss, z=Z, y=Y):
    z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    value = loss(z, torch.tensor(y))
    (grad,) = torch.autograd.grad(value, z)
    return float(value), sum(grad.tolist(), [])  # flattened: pytest.approx compares flat sequences


def approx2(rows):
    return pytest.approx(sum((list(r) for r in rows), []))


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_cross_entropy():
    value, grad = _run(CrossEntropy())
    p = [_softmax(r) for r in Z]
    assert value == pytest.approx(-(math.log(p[0][0]) + math.log(p[1][2])) / 2)
    expected = [[(p[i][j] - (j == Y[i])) / 2 for j in range(3)] for i in range(2)]
    assert grad == approx2(expected)


def test_multi_margin():
    # (1/C) sum_{j != y} max(0, m - z_y + z_j), m = 1: sample 0: 0 + 0; sample 1: (1 - 0.2 + 0) + (1 - 0.2 + 1)
    value, grad = _run(MultiMargin(1.0))
    assert value == pytest.approx((0 + (0.8 + 1.8) / 3) / 2)
    assert grad == approx2([[0, 0, 0], [1 / 6, 1 / 6, -2 / 6]])


def test_offset_cross_entropy():
    u, T = 0.7, 0.25
    value, grad = _run(OffsetCrossEntropy(offset=u, temperature=T))
    shifted = [[(v - u * (j == Y[i])) / T for j, v in enumerate(r)] for i, r in enumerate(Z)]
    p = [_softmax(r) for r in shifted]
    assert value == pytest.approx(T * -(math.log(p[0][0]) + math.log(p[1][2])) / 2)
    # d/dz of T·CE(z'/T): (softmax(z') - onehot) / batch, the temperature cancels
    assert grad == approx2([[(p[i][j] - (j == Y[i])) / 2 for j in range(3)] for i in range(2)])
    # the offset from a target radius: u = sqrt(2) * L * eps
    assert OffsetCrossEntropy(target_radius=0.5, lipschitz=2.0).offset == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="exactly one"):
        OffsetCrossEntropy(offset=1.0, target_radius=0.5)


def test_hkr():
    alpha, m = 0.9, 1.0
    value, grad = _run(HKR(alpha=alpha, min_margin=m))
    # hinge, per sample: mean over classes of relu(m/2 - s_c z_c), the true class weighted C-1 = 2
    h0 = (2 * max(0, 0.5 - 2.0) + max(0, 0.5 + 0.5) + max(0, 0.5 - 1.0)) / 3  # = 1/3
    h1 = (max(0, 0.5 + 0.0) + max(0, 0.5 + 1.0) + 2 * max(0, 0.5 - 0.2)) / 3  # = (0.5 + 1.5 + 0.6) / 3
    hinge = (h0 + h1) / 2
    # KR: mean over classes of E_{y=c} z_c - E_{y!=c} z_c; class 1 has no sample (counts 0)
    kr = ((2.0 - 0.0) + 0 + (0.2 - (-1.0))) / 3
    assert value == pytest.approx(alpha * hinge - (1 - alpha) * kr)
    g_h = [[0, 1 / 3 / 2, 0], [1 / 3 / 2, 1 / 3 / 2, -2 / 3 / 2]]  # d hinge / dz
    g_kr = [[1 / 3, 0, -1 / 3], [-1 / 3, 0, 1 / 3]]  # d KR / dz
    assert grad == approx2([[alpha * a - (1 - alpha) * b for a, b in zip(ra, rb)] for ra, rb in zip(g_h, g_kr)])


def test_certified_hinge():
    # margin sqrt(2)*L*eps = 1 for eps = 1/sqrt(2), L = 1: sample 0 gap 1.5 (no loss), sample 1 gap 0.2 - 1 = -0.8
    value, grad = _run(CertifiedHinge(target_radius=1 / math.sqrt(2)))
    assert value == pytest.approx((0 + (1 + 0.8)) / 2)
    assert grad == approx2([[0, 0, 0], [0, 0.5, -0.5]])
