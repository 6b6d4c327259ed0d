"""Each family computes its published formula, checked against an independent construction on a small grid: the
explicit matrix of the operator (built from PyTorch's own padded convolutions and ``torch.roll``, never from the
project's Fourier or kernel code), then the method's formula applied to that matrix with dense linear algebra."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from problems import float64
from stablenets.nn.layers import (
    AOCConv2d,
    AOLConv2d,
    BCOPConv2d,
    BROConv2d,
    CayleyConv2d,
    CPLConv2d,
    GradientFlowConv2d,
    LOTConv2d,
    SLLConv2d,
    SOCConv2d,
)
from stablenets.nn.layers.bcop import bjorck_batched
from stablenets.nn.layers.fourier import kernel_symbol, spectral_apply
from stablenets.nn.layers.soc import FOUR_RESHAPINGS

C, N = 3, 5  # channels, grid side


def _matrix(f, shape) -> torch.Tensor:
    """The matrix of a linear map ``f`` on inputs of ``shape`` (columns: images of the basis vectors)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return f(basis).reshape(n, -1).T


def _conv(kernel: torch.Tensor, padding_mode: str):
    """PyTorch's stride-1 'same' cross-correlation (its own padding modes)."""
    p = kernel.shape[-1] // 2
    if padding_mode == "circular":
        return lambda x: F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), kernel)
    return lambda x: F.conv2d(x, kernel, padding=p)


def _x(shape=(C, N, N), n=4) -> torch.Tensor:
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_the_fourier_symbol_is_the_centred_cross_correlation():
    """Cayley, LOT, Sandwich and BRO build their maps from :func:`kernel_symbol`: applied on the input's torus it
    is PyTorch's circular cross-correlation, on the zero-padded grid (output cropped) its zero-padded one."""
    torch.manual_seed(0)
    for k in (1, 3, 5):
        kernel = torch.randn(4, C, k, k, dtype=torch.float64)
        x = _x((C, 6, 7))
        p = k // 2
        circular = spectral_apply(x, kernel_symbol(kernel, (6, 7)), (6, 7))
        zeros = spectral_apply(x, kernel_symbol(kernel, (6 + 2 * p, 7 + 2 * p)), (6 + 2 * p, 7 + 2 * p), p)
        assert torch.allclose(circular, _conv(kernel, "circular")(x), atol=1e-12)
        assert torch.allclose(zeros, _conv(kernel, "zeros")(x), atol=1e-12)


def test_cayley_is_the_cayley_transform_of_the_normalised_convolution():
    """``Q = (I − A)(I + A)⁻¹`` with ``A = S − Sᵀ``, ``S = αK/‖K̂‖_F`` the circular convolution (square case)."""
    torch.manual_seed(0)
    layer = float64(lambda: CayleyConv2d((C, N, N))).eval()
    with torch.no_grad():
        layer.alpha.mul_(1.7)  # away from its initial value
    frob = torch.fft.rfft2(layer.weight.detach(), s=(N, N)).abs().square().sum().sqrt()  # half-spectrum norm
    s = float(layer.alpha) / float(frob) * _matrix(_conv(layer.weight.detach(), "circular"), (C, N, N))
    a = s - s.T
    eye = torch.eye(len(a), dtype=torch.float64)
    q = (eye - a) @ torch.linalg.inv(eye + a)
    x = _x()
    with torch.no_grad():
        expected = (x.reshape(len(x), -1) @ q.T).reshape(x.shape) + layer.bias[:, None, None]
        assert torch.allclose(layer(x), expected, atol=1e-10)


def test_lot_orthonormalises_the_zero_padded_convolution_on_the_padded_grid():
    """``(VVᵀ + εI)^{-1/2} V`` of the circular convolution on the ``(N+2p)²`` grid, applied to the zero-padded input
    and cropped (Newton–Schulz run to convergence; the inverse square root by eigendecomposition here)."""
    torch.manual_seed(0)
    layer = float64(lambda: LOTConv2d((C, N, N), train_iters=60, eval_iters=60)).eval()
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
    g = N + 2
    v = _matrix(_conv(layer.weight.detach(), "circular"), (C, g, g))
    # per frequency (V(ω)V(ω)ᴴ + εI)^{-1/2} V(ω) is this function of the circulant V (the scale c cancels once the
    # iteration has converged)
    evals, evecs = torch.linalg.eigh(v @ v.T + 1e-4 * torch.eye(len(v), dtype=torch.float64))
    q = evecs @ torch.diag(evals.rsqrt()) @ evecs.T @ v
    x = _x()
    padded = F.pad(x, (1, 1, 1, 1)).reshape(len(x), -1)
    expected = (padded @ q.T).reshape(len(x), C, g, g)[..., 1:-1, 1:-1] + layer.bias.detach()[:, None, None]
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-8), float((layer(x) - expected).abs().max())


def test_bcop_is_h_then_alternating_height_and_width_projector_blocks():
    """``M_h(P₂) M_w(Q₂) M_h(P₁) M_w(Q₁) H`` on the torus, ``M_h(P) x = P x + (I − P) x[h + 1]``, ``M_w`` alike along
    the width, the whole centred by ``p = 1`` in each axis."""
    torch.manual_seed(0)
    layer = float64(lambda: BCOPConv2d((4, N, N), padding_mode="circular")).eval()
    ortho = bjorck_batched(layer.params.detach(), layer.bjorck_iters, layer.u, update=False)
    c = 4
    proj = [ortho[j][:, : c // 2] @ ortho[j][:, : c // 2].T for j in range(1, 5)]
    eye = torch.eye(c, dtype=torch.float64)

    def channel(m):  # a channel matrix applied at every pixel
        return lambda x: torch.einsum("oi,bihw->bohw", m, x)

    def block(m, dim):  # m x + (I - m) x shifted by one pixel forward along dim
        return lambda x: channel(m)(x) + channel(eye - m)(torch.roll(x, -1, dims=dim))

    steps = [channel(ortho[0]), block(proj[1], 3), block(proj[0], 2), block(proj[3], 3), block(proj[2], 2)]

    def expected(x):
        for f in steps:
            x = f(x)
        return torch.roll(x, (1, 1), dims=(2, 3))  # 'same': the kernel's taps centred

    x = _x((4, N, N))
    with torch.no_grad():
        assert torch.allclose(layer(x) - layer.bias[:, None, None], expected(x), atol=1e-10)


def test_soc_normalises_by_the_smallest_norm_of_four_reshaped_kernels():
    """``σ̂ = min_m ‖S_m‖`` over the reshapings ``(out·h)×(in·w)``, ``(out·w)×(in·h)``, ``out×(in·h·w)``,
    ``in×(out·h·w)`` (power iterations run to convergence; the norms by SVD here), ``L = c S/σ̂``, ``c = 0.7``."""
    torch.manual_seed(0)
    layer = float64(lambda: SOCConv2d((C, N, N), init_iters=400)).eval()
    s = layer.skew().detach()  # (o, i, a, b)
    k = s.shape[-1]
    reshaped = [
        s.permute(0, 2, 1, 3).reshape(C * k, C * k),
        s.permute(0, 3, 1, 2).reshape(C * k, C * k),
        s.reshape(C, C * k * k),
        s.permute(1, 0, 2, 3).reshape(C, C * k * k),
    ]
    assert len(reshaped) == len(FOUR_RESHAPINGS)
    sigma = min(float(torch.linalg.matrix_norm(m, 2)) for m in reshaped)
    with torch.no_grad():
        assert torch.allclose(layer.eval_operator(), 0.7 * s / sigma, rtol=1e-8)
        x = _x()
        L = _matrix(_conv(0.7 * s / sigma, "zeros"), (C, N, N))
        series = sum(torch.linalg.matrix_power(L, j) / math.factorial(j) for j in range(layer.eval_terms + 1))
        expected = (x.reshape(len(x), -1) @ series.T).reshape(x.shape) + layer.bias[:, None, None]
        assert torch.allclose(layer(x), expected, atol=1e-10)
    assert SOCConv2d((C, N, N), kernel_size=1).correction == 1.0  # the reference's for 1x1 kernels


def test_sll_rescaling_is_the_row_sums_of_the_convolutions_gram_matrix():
    """``t_i = Σ_j |WWᵀ|_ij q̃_j/q̃_i`` with ``WWᵀ`` the Gram matrix of the convolution on a grid large enough that
    every tap pair is counted (the kernel's autocorrelation), ``q̃ = |q| + 10⁻⁶``, ``q`` drawn from N(0, 1)."""
    torch.manual_seed(0)
    layer = float64(lambda: SLLConv2d((C, N, N)))
    assert layer.q.std() > 0.3  # random, not ones
    g = 2 * 3 - 1 + 2
    w = _matrix(_conv(layer.weight.detach(), "circular"), (C, g, g))  # hidden·g² × C·g²
    gram = (w @ w.T).abs().reshape(C, g * g, C, g * g)[:, 0]  # rows of pixel 0: every tap pair once
    q = layer.q.detach().abs() + 1e-6
    t = (gram.sum(-1) * q[None, :]).sum(1) / q
    torch.testing.assert_close(layer.t_inverse().detach(), 1 / (t + layer.eps), rtol=1e-12, atol=0)


def test_aol_rescales_the_input_channels_by_the_gram_row_sums():
    """``W D`` with ``D_ii = (Σ_j |WᵀW|_ij)^{-1/2}``, the Gram matrix of the circular convolution on a grid where every
    tap pair is counted; applied with circular padding."""
    torch.manual_seed(0)
    layer = float64(lambda: AOLConv2d((C, N, N), padding_mode="circular", init="orthogonal")).eval()
    g = 7
    w = _matrix(_conv(layer.weight.detach(), "circular"), (C, g, g))
    gram = (w.T @ w).abs().reshape(C, g * g, C, g * g)[:, 0]
    d = (gram.sum((-1, -2)) + 1e-6).rsqrt()
    x = _x()
    with torch.no_grad():
        expected = _conv(layer.weight * d[None, :, None, None], "circular")(x) + layer.bias[:, None, None]
        assert torch.allclose(layer(x), expected, atol=1e-12)


def test_bro_is_a_reflector_per_frequency_and_starts_as_a_sign_flip():
    torch.manual_seed(0)
    layer = float64(lambda: BROConv2d((4, N, N), rank=0.5)).eval()
    x = _x((4, N, N))
    with torch.no_grad():  # the reference's identity init: W = diag(−I_r, I), r = 2
        y = layer(x) - layer.bias[:, None, None]
        assert torch.allclose(y[:, :2], -x[:, :2], atol=5e-4) and torch.allclose(y[:, 2:], x[:, 2:], atol=1e-12)
        layer.weight.add_(torch.randn_like(layer.weight))
        w = layer.symbol()
    eye = torch.eye(4, dtype=w.dtype)
    assert torch.allclose(w, w.mH, atol=1e-12)  # Hermitian
    assert torch.allclose(w @ w.mH, eye.expand_as(w), atol=1e-3)  # unitary up to the Gram regulariser


def test_aoc_is_orthogonal_on_the_torus():
    torch.manual_seed(0)
    layer = float64(lambda: AOCConv2d((4, N, N))).eval()
    m = _matrix(lambda x: layer(x) - layer.bias[:, None, None], (4, N, N)).detach()
    assert torch.allclose(torch.linalg.svdvals(m), torch.ones(len(m), dtype=torch.float64), atol=1e-5)


def test_aoc_power_iterations_run_whenever_the_layer_trains_however_the_mode_was_set():
    """The package's power iterations (its normalisation's estimate) run in training mode and not in eval mode,
    also when the mode is restored by assigning ``training`` (Lightning's way after validation, with no ``train()``
    call): were they left off, the estimate would go stale as the weights move and Björck's iteration diverges."""
    torch.manual_seed(0)
    layer = AOCConv2d((4, N, N))
    estimates = [p for n, p in layer.named_parameters() if n.endswith((".u.original", ".v.original"))]
    assert estimates
    x = torch.randn(2, 4, N, N)

    def moved() -> bool:
        before = [p.detach().clone() for p in estimates]
        with torch.no_grad():
            w = layer.conv.parametrizations.weight.original
            w.add_(0.3 * torch.randn_like(w))
            layer(x)
        return any(not torch.equal(a, p) for a, p in zip(before, estimates))

    layer.eval()
    assert not moved()
    for m in layer.modules():  # as Lightning restores the modes it recorded before validation
        m.training = True
    assert moved()
    layer.train(False)
    assert not moved()
    layer.train()
    assert moved()


def test_cpl_and_the_gradient_flow_block_are_eq_18_with_eq_19():
    """CPL: one step ``x − h Aᵀσ(Ax + b)``, ``h = 2(1 − margin)``, ``A = W/‖W‖`` with the circular norm exact (the
    eval-mode weight is shrunk until its certified norm is at most 1: by ~1e-6 relative); the gradient-flow block
    starts as CPL and takes ``n = ⌈T(1 + margin)/2⌉`` steps of ``T/n`` as its learned ``T`` grows."""
    torch.manual_seed(0)
    cpl = float64(lambda: CPLConv2d((C, N, N), padding_mode="circular")).eval()
    w, b = cpl.op.weight.detach(), cpl.op.bias.detach()
    norm = float(torch.linalg.matrix_norm(_matrix(_conv(w, "circular"), (C, N, N)), 2))
    a = w / norm

    def step(x, h):
        z = F.relu(_conv(a, "circular")(x) + b[:, None, None])
        return x - h * F.conv_transpose2d(F.pad(z, (1, 1, 1, 1), mode="circular"), a)[..., 2:-2, 2:-2]

    x = _x()
    with torch.no_grad():
        assert torch.allclose(cpl(x), step(x, 2 * 0.99), atol=1e-5)
    flow = float64(lambda: GradientFlowConv2d((C, N, N))).eval()
    flow.op.load_state_dict(cpl.op.state_dict())
    with torch.no_grad():
        assert torch.allclose(flow(x), cpl(x), atol=1e-12)  # T = T0: CPL
        flow.log_scale.fill_(math.log(2.5))  # T = 2.5 T0 = 4.95: n = ⌈4.95·1.01/2⌉ = 3 steps of T/3
        assert flow.n_steps == 3
        expected = x
        for _ in range(3):
            expected = step(expected, 2.5 * 2 * 0.99 / 3)
        assert torch.allclose(flow(x), expected, atol=1e-5)
        assert flow.lipschitz_bound() == 1.0
