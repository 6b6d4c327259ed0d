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
