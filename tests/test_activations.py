"""The activations: MaxMin (GroupSort of pairs) in every mode and layout."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("pairs", ["adjacent", "halves"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "dense"])
def test_maxmin_is_a_permutation_in_every_mode(layout, pairs):
    """GroupSort(2) trains through one masked swap (a custom autograd function): the same values as min/max,
    gradients and forward-mode derivatives checked against finite differences (double backward too), the
    input's memory layout kept, and the gradient a permutation of the output gradient — its norm preserved,
    ties included."""
    from stablenets.nn.activations import GroupSort

    torch.manual_seed(0)
    gs = GroupSort(2, pairs)
    x = torch.randn((3, 8) if layout == "dense" else (3, 8, 4, 4), dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x[:, 2] = x[:, 3]  # ties
    x[:, 1] = x[:, 5]
    if pairs == "adjacent":
        p = x.unflatten(1, (-1, 2))
        ref = torch.stack([p.min(2).values, p.max(2).values], 2).flatten(1, 2)
    else:
        a, b = x[:, :4], x[:, 4:]
        ref = torch.cat([torch.minimum(a, b), torch.maximum(a, b)], 1)
    xg = x.clone().requires_grad_()
    y = gs(xg)
    assert torch.equal(y, ref) and torch.equal(gs(x), ref)  # the training and the inference paths
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, xg, g)
    assert torch.equal(grad.flatten().sort().values, g.flatten().sort().values)  # a permutation of g
    x_free = x.clone()
    x_free[:, 2] += 0.5  # no ties: derivatives exist
    x_free[:, 1] += 0.5
    assert torch.autograd.gradcheck(gs, (x_free.clone().requires_grad_(),))
    assert torch.autograd.gradgradcheck(gs, (x_free.clone().requires_grad_(),))
    v = torch.randn_like(x_free)
    _, jv = torch.func.jvp(gs, (x_free,), (v,))
    fd = (gs(x_free + 1e-6 * v) - gs(x_free - 1e-6 * v)) / 2e-6
    assert torch.allclose(jv, fd, atol=1e-6)
