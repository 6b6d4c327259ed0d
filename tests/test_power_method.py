"""Eq. (31) against exact spectral norms (Exercise 14), for dense matrices and convolution operators."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stablenets.nn import SpectralConv2d, conv_norm_bound, conv_ops, dense_ops, power_method


def _dense_cases():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(10, 10, generator=g, dtype=torch.float64)
    return {
        "I": torch.eye(10, dtype=torch.float64),
        "5I": 5 * torch.eye(10, dtype=torch.float64),
        "exp(B-B^T)": torch.linalg.matrix_exp(B - B.T),
        "random 10x10": torch.randn(10, 10, generator=g, dtype=torch.float64),
        "random 30x7": torch.randn(30, 7, generator=g, dtype=torch.float64),
        "random 5x40": torch.randn(5, 40, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("name", list(_dense_cases()))
def test_power_method_dense(name):
    A = _dense_cases()[name]
    u0 = torch.randn(A.shape[1], dtype=A.dtype, generator=torch.Generator().manual_seed(1))
    sigma, u, its = power_method(*dense_ops(A), u0, n_iters=2000, tol=1e-14)
    exact = torch.linalg.matrix_norm(A, 2)
    assert torch.isclose(sigma, exact, rtol=1e-6), (float(sigma), float(exact))
    assert sigma <= exact * (1 + 1e-9)  # the power method approaches from below


def conv_matrix(weight, in_shape, stride=1, padding=1):
    """The conv's explicit matrix: apply it to every basis image."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=weight.dtype).reshape(n, *in_shape)
    return F.conv2d(basis, weight, stride=stride, padding=padding).reshape(n, -1).T


@pytest.mark.parametrize(
    "cin,cout,hw,stride,k", [(2, 3, 6, 1, 3), (3, 3, 5, 1, 3), (1, 4, 7, 2, 3), (2, 2, 6, 1, 5), (4, 4, 14, 1, 3)]
)
def test_conv_operator_norm_matches_explicit_matrix(cin, cout, hw, stride, k):
    g = torch.Generator().manual_seed(cin * 10 + hw)
    w = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64)
    shape, pad = (cin, hw, hw), k // 2
    exact = torch.linalg.matrix_norm(conv_matrix(w, shape, stride, pad), 2)
    sigma, _, _ = power_method(
        *conv_ops(w, shape, stride, pad),
        torch.randn(1, *shape, generator=g, dtype=torch.float64),
        n_iters=3000,
        tol=1e-13,
    )
    assert abs(float(sigma) / float(exact) - 1) < 0.01
    bound = conv_norm_bound(w, shape, stride, pad)
    assert bound >= exact * (1 - 1e-9)  # a certified *upper* bound
    if stride == 1 and hw >= 14:  # boundary effects fade with size (28x28: < 1%); stride > 1 is looser
        assert bound <= 1.05 * exact


def test_the_certified_conv_norm_is_the_operators_not_the_reshaped_kernels():
    """The norm is computed on the operator (the reshaped kernel's norm can be far below it): the certified bound
    and a spectral layer's estimate both reach the explicit matrix's norm."""
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(conv_matrix(w, (1, 8, 8)), 2))
    reshaped = float(torch.linalg.matrix_norm(w.reshape(1, -1), 2))
    assert exact / reshaped > 2.5
    assert exact <= float(conv_norm_bound(w, (1, 8, 8), 1, 1)) <= exact * 1.12
    layer = SpectralConv2d((1, 8, 8), 1, 3, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.update_norm_estimate(n_iters=500, tol=1e-12, max_iters=5000)
    assert float(layer.norm_estimate) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (3, 1, 0), (1, 1, 0), (5, 1, 1)])
def test_adjoint_is_exact(k, stride, pad):
    """``<Au, v> = <u, Aᵀv>`` on both adjoint paths: the flipped-kernel convolution (stride 1, same padding)
    and the transposed convolution (everything else)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2, k, k, generator=g, dtype=torch.float64)
    op, op_t = conv_ops(w, (2, 7, 7), stride, pad)
    u = torch.randn(1, 2, 7, 7, generator=g, dtype=torch.float64)
    v = torch.randn_like(op(u))
    assert op_t(v).shape == u.shape
    assert torch.isclose((op(u) * v).sum(), (u * op_t(v)).sum(), rtol=1e-10)


def test_batched_power_steps_equal_one_layer_at_a_time():
    """The callback's batched step (norms, normalisation, writes for all layers at once) is eq. (31) per layer."""
    import copy

    from stablenets.nn import SpectralConv2d, SpectralLinear
    from stablenets.nn.power import power_iteration
    from stablenets.nn.spectral import power_steps, project_all

    torch.manual_seed(0)
    ops = [
        SpectralConv2d((3, 8, 8), 5, max_norm=1.0),
        SpectralConv2d((4, 6, 6), 4, stride=2),
        SpectralLinear(7, 4, max_norm=2.0, exact=True),
        SpectralLinear(9, 9, max_norm=0.5),
    ]
    for m in ops:
        m.weight.data.mul_(3.0)
    ref = copy.deepcopy(ops)
    power_steps(ops)
    for m, r in zip(ops, ref):
        sigma, u = power_iteration(*r.operators(), r.u)
        assert torch.allclose(m.u, u, rtol=1e-6, atol=1e-7) and float(m.norm_estimate) == pytest.approx(
            float(sigma), rel=1e-6
        )
    before = [m.weight.detach().clone() for m in ops]
    assert int(project_all(ops)) == 3  # the free layer is left alone
    assert [float(m.norm_estimate) for m in ops][::2] == [1.0, 2.0]  # σ̂ at the cap exactly
    assert float(ops[3].norm_estimate) == 0.5 and torch.equal(ops[1].weight, before[1])
    assert int(project_all(ops)) == 0  # nothing left to do
    zero = SpectralLinear(4, 4)
    zero.weight.data.zero_()
    u0 = zero.u.clone()
    power_steps([zero])  # u in the null space: kept (a zero u could never leave it), estimate ~0
    assert torch.allclose(zero.u, u0) and float(zero.norm_estimate) < 1e-6
