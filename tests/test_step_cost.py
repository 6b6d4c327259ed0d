"""Per-step work of the training callbacks that must not change what they compute."""

from __future__ import annotations

import pytest
import torch

from stablenets.nn import SpectralConv2d, SpectralLinear
from stablenets.nn.spectral import bjorck


@pytest.mark.parametrize("layer", ["dense", "conv1x1"])
def test_the_short_per_step_retraction_equals_the_long_one(layer):
    """``project_`` retracts with ``step_bjorck_iters`` Björck iterations; 4 from the previous step's
    orthogonal weight moved by one optimizer step (every entry by up to 1e-2, above the presets' peak learning
    rates): the result is the 12-iteration one to float32 rounding, and orthogonal."""
    torch.manual_seed(0)
    m = (
        SpectralLinear(1176, 64, max_norm=1.0, exact=True, orthogonal=True)
        if layer == "dense"
        else SpectralConv2d((64, 7, 7), 24, kernel_size=1, max_norm=1.0, exact=True, orthogonal=True)
    )
    assert m.step_bjorck_iters == 4  # the default
    with torch.no_grad():
        m.weight.add_(1e-2 * torch.randn(m.weight.shape).sign())  # an Adam step at lr 1e-2
        m.update_norm_estimate(n_iters=50)
        ref = bjorck(m.weight.view(len(m.weight), -1) / m.norm_estimate, iters=12)
        m.project_()
        w = m.weight.detach().view(len(m.weight), -1).clone()
    assert (w - ref).abs().max() <= 1e-6
    rows = w @ w.t()
    assert (rows - torch.eye(len(rows))).abs().max() <= 1e-5


def test_gram_form_of_bjorck_is_the_plain_iteration():
    """The retraction of a wide matrix runs on its r × r Gram matrix (``W_k = M_k W₀``): the same iterates as
    ``W ← (1+β)W − β(WWᵀ)W`` on the matrix itself, for wide and tall shapes."""
    torch.manual_seed(0)
    for shape in [(64, 1176), (1176, 64), (24, 64)]:
        w = torch.randn(shape, dtype=torch.float64)
        w = w / torch.linalg.matrix_norm(w, 2)
        plain = w.t() if shape[0] > shape[1] else w
        for _ in range(6):
            plain = 1.5 * plain - 0.5 * (plain @ plain.t()) @ plain
        plain = plain.t() if shape[0] > shape[1] else plain
        assert torch.allclose(bjorck(w, iters=6), plain, atol=1e-12)


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
