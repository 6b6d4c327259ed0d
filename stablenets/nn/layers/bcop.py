r"""BCOP — Block Convolution Orthogonal Parameterization (Li, Haque, Anil, Lucas, Grosse, Jacobsen, NeurIPS
2019, "Preventing Gradient Attenuation in Lipschitz Constrained Convolutional Networks"; after Xiao et al. 2018):

.. math::  K = B(P_{k-1}, Q_{k-1}) \star \dots \star B(P_1, Q_1) \star H, \qquad
           B(P, Q) = \begin{bmatrix} PQ & P(I - Q) \\ (I - P)Q & (I - P)(I - Q) \end{bmatrix}

``H`` is an orthogonal ``C×C`` matrix, each ``P_j``, ``Q_j`` a symmetric projector ``UUᵀ`` of rank ``⌊C/2⌋`` (``U``
the first columns of an orthogonal matrix), ``B(P, Q)`` the ``2×2`` block kernel of Xiao et al. — a ``2×1``
block ``[P; I − P]`` along the height composed with a ``1×2`` block ``[Q, I − Q]`` along the width — and ``⋆`` the
matrix convolution of kernels (the kernel of the composed convolutions; ``A ⋆ B`` applies ``B`` first).  As in the
reference code, ``H`` acts first and the height and width blocks alternate (``M_h(P₂) M_w(Q₂) M_h(P₁) M_w(Q₁) H``
as operators).  The symbol of a block along one axis at frequency ω is ``P + (I − P)e^{−iω}``, unitary, so the
symbol of ``K`` is unitary at every frequency: the circular convolution with ``K`` is orthogonal on any grid (the
zero-padded one, a restriction of it, has norm ≤ 1).  The orthogonal matrices are 20 Björck–Bowie iterations
from the free parameters scaled by a power-method estimate of their norm (warm-started; the reference's 10
iterations from a fresh vector reach the same scale).  Channels: the layer works on ``C = max(in, out)``
channels; zero-padding the input's channels and truncating the output's amounts to the sub-kernel
``K[:out, :in]``.

Operator and certified bound: ``K[:out, :in]``, applied as a plain convolution; its norm from its Fourier symbol on
the actual input shape: 1 up to the Björck iterations' residual and rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from .base import LipschitzLayer, PlainConv, conv_same


def bjorck_batched(
    w: torch.Tensor, iters: int, u: torch.Tensor | None = None, power_iters: int = 2, update: bool = True
) -> torch.Tensor:
    """Björck–Bowie ``W ← 1.5W − 0.5 W WᵀW`` on a batch of square matrices, from ``W/σ̂``.

    ``σ̂ = ‖W u‖`` with ``u`` a power-method estimate of the top right singular vector (``power_iters``
    warm-started iterations on the buffer ``u``, ``(..., C, 1)``, updated in place unless ``update`` is False (eval
    mode: a pure function of the parameters and the buffer); no gradient through ``u``): the
    gradient of ``W/σ̂`` is that of the normalisation by the norm, without the float32 SVD, which failed to converge
    on near-orthogonal 256-channel matrices (all singular values ≈ 1, what BCOP trains).  ``σ̂`` approaches ``‖W‖``
    from below; Björck converges from any singular values in ``(0, √3)``."""
    if u is None:
        u = torch.randn(*w.shape[:-1], 1, dtype=w.dtype, device=w.device)
        power_iters = max(power_iters, 10)
    with torch.no_grad():
        for _ in range(power_iters):
            v = w.mT @ (w @ u)
            v = v / v.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
            if update:
                u.copy_(v)
            else:
                u = v
    w = w / (w @ u).norm(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    for _ in range(iters):
        w = torch.baddbmm(w, w, w.mT @ w, beta=1.5, alpha=-0.5)  # 1.5W − 0.5 W(WᵀW), one fused product
    return w


def matrix_conv(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """The kernel of the composition: ``R[t] = Σ_s K1[s] K2[t − s]`` (matrix products of taps), ``(C, C, h, w)``."""
    c, _, h1, w1 = k1.shape
    h2, w2 = k2.shape[-2:]
    out = k1.new_zeros(c, c, h1 + h2 - 1, w1 + w2 - 1)
    for a in range(h2):
        for b in range(w2):
            out = out + F.pad(torch.einsum("ijab,jk->ikab", k1, k2[:, :, a, b]), (b, w2 - 1 - b, a, h2 - 1 - a))
    return out


class BCOPConv2d(LipschitzLayer):
    """BCOP ``k×k`` convolution.

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        padding_mode: ``"circular"`` (orthogonal for equal channels) or ``"zeros"`` (norm ≤ 1).
        bjorck_iters: Björck iterations of the orthogonal matrices.

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    operator_kind = "kernel"
    repr_fields = ("bjorck_iters",)

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "circular",
        bjorck_iters: int = 20,
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        check_count(bjorck_iters=bjorck_iters)
        c = max(in_shape[0], out_channels)
        self.bjorck_iters, self.channels = bjorck_iters, c
        params = torch.stack([nn.init.orthogonal_(torch.empty(c, c)) for _ in range(2 * (kernel_size - 1) + 1)])
        self.params = nn.Parameter(params)
        u = torch.randn(len(params), c, 1)
        self.register_buffer("u", u / u.norm(dim=(-2, -1), keepdim=True))  # the power method's vectors
        bound = 1 / out_channels**0.5  # the reference's U(±1/√out)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def kernel(self) -> torch.Tensor:
        """The composed ``(C, C, k, k)`` kernel on ``C = max(in, out)`` channels (see the module docstring)."""
        ortho = bjorck_batched(self.params, self.bjorck_iters, self.u, update=self.training)
        c = self.channels
        eye = torch.eye(c, dtype=ortho.dtype, device=ortho.device)

        def projector(m: torch.Tensor) -> torch.Tensor:
            u = m[:, : c // 2]
            return u @ u.t()

        kernel = ortho[0][:, :, None, None]  # H, applied first
        for j in range(1, self.kernel_size):
            p, q = projector(ortho[2 * j - 1]), projector(ortho[2 * j])
            along_h = torch.stack([p, eye - p], dim=-1)[:, :, :, None]  # 2×1: [P; I − P]
            along_w = torch.stack([q, eye - q], dim=-1)[:, :, None, :]  # 1×2: [Q, I − Q]
            kernel = matrix_conv(matrix_conv(along_h, along_w), kernel)  # B(P, Q) after what came before
        return kernel

    def operator(self) -> torch.Tensor:
        """``K[:out, :in]``: the kernel the forward pass applies."""
        return self.kernel()[: self.out_shape[0], : self.in_shape[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        return conv_same(x, self.operator(), self.bias, self.padding_mode)

    def plain(self) -> nn.Module:
        return PlainConv(self.eval_operator(), self.bias, self.padding_mode)
