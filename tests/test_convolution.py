"""Circular padding as one autograd function: the values of PyTorch's circular padding, its exact adjoint (first
and second order, reverse and forward mode), the input's layout, and concatenations in traced graphs."""

import pytest
import torch
import torch.nn.functional as F

from stablenets.nn.convolution import circular_pad, conv_same, conv_same_adjoint

CASES = [((2, 3, 5, 6), 1), ((2, 3, 5, 6), 2), ((1, 2, 1, 1), 1), ((2, 3, 2, 3), 2), ((2, 8, 7, 7), 3), ((3, 4, 4), 1)]


def _reference(x: torch.Tensor, p: int) -> torch.Tensor:
    batched = x if x.dim() == 4 else x[None]
    out = F.pad(batched, (p, p, p, p), mode="circular")
    return out if x.dim() == 4 else out[0]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape, p", CASES)
def test_circular_pad_is_pytorchs_and_its_derivatives_are_exact(shape, p, channels_last):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = circular_pad(x, p)
    ref = _reference(x, p)
    assert torch.equal(y, ref)
    if channels_last and x.dim() == 4 and min(shape[1:]) > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    expected = torch.autograd.grad(ref, x, g)[0]  # each border value added back (up to the order of the sums)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], expected, rtol=1e-15, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: circular_pad(t, p), (x,))
    assert torch.autograd.gradgradcheck(lambda t: circular_pad(t, p) ** 2, (x,))
    v = torch.randn_like(x)
    _, jv = torch.func.jvp(lambda t: circular_pad(t, p), (x.detach(),), (v,))
    assert torch.equal(jv, _reference(v, p))
    _, vjp = torch.func.vjp(lambda t: circular_pad(t, p), x.detach())
    torch.testing.assert_close(vjp(g)[0], expected, rtol=1e-15, atol=1e-15)


def test_circular_pad_refuses_a_border_wider_than_the_image():
    with pytest.raises(ValueError, match="exceeds the image size"):
        circular_pad(torch.zeros(1, 1, 2, 5), 3)


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_traced_circular_convolution_is_concatenations_with_the_same_values():
    x, k = torch.randn(2, 3, 6, 6), torch.randn(3, 3, 3, 3)
    traced = torch.jit.trace(lambda t: conv_same(t, k, None, "circular"), (x,))
    assert "aten::cat" in str(traced.graph) and "_CircularPad" not in str(traced.graph)
    assert torch.equal(traced(x), conv_same(x, k, None, "circular"))


def test_circular_adjoint_is_the_transpose():
    torch.manual_seed(1)
    k = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    x, v = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(2, 4, 5, 5, dtype=torch.float64)
    lhs = (conv_same(x, k, None, "circular") * v).sum()
    rhs = (x * conv_same_adjoint(v, k, "circular")).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)
