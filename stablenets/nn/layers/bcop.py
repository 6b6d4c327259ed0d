r"""BCOP — Block Convolution Orthogonal Parameterization (Li, Haque, Anil, Lucas, Grosse, Jacobsen, NeurIPS
2019, "Preventing Gradient Attenuation in Lipschitz Constrained Convolutional Networks";
after Xiao et al. 2018):

.. math::  K = H \star B(P_1) \star \dots \star B(P_{k-1}) \star B(P_k)^\top \star \dots \star B(P_{2k-2})^\top,
           \qquad B(P) = [\,P,\; I - P\,]

``H`` is an orthogonal ``C×C`` matrix, each ``P_i = U_i U_iᵀ`` a symmetric projector of rank ``⌊C/2⌋`` (``U_i``
the first columns of an orthogonal matrix), ``B(P)`` a ``1×2`` block kernel (``B(P)ᵀ``: ``2×1``) and ``⋆`` the
matrix convolution of kernels (the kernel of the composed convolutions).  The symbol of ``B(P)`` at
frequency ω is ``P + (I − P)e^{−iω}``, unitary, so the symbol of ``K`` is unitary at every frequency: the
circular convolution with ``K`` is orthogonal on any grid (the zero-padded one, a restriction of it, has
norm ≤ 1).  The orthogonal matrices are Björck–Bowie iterations (:func:`~stablenets.nn.spectral.bjorck`,
here batched) from the free parameters scaled to spectral norm 1.  Channels: the layer works on
``C = max(in, out)`` channels, zero-padding the input (an isometry) or truncating the output (norm ≤ 1).

Operator and certified bound: the composed kernel restricted to the layer's channels, ``K[:out, :in]`` (what
zero-padding the input's channels and truncating the output's amounts to), applied as a plain convolution; its
norm from its Fourier symbol on the actual input shape: 1 up to the Björck iterations' residual and rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from .base import LipschitzLayer, conv_same, plain_conv


def bjorck_batched(w: torch.Tensor, iters: int) -> torch.Tensor:
    """Björck–Bowie ``W ← 1.5W − 0.5 W WᵀW`` on a batch of square matrices, from ``W/‖W‖₂``.

    ``‖W‖₂ = ‖W v₁‖`` with ``v₁`` the top eigenvector of ``WᵀW`` from a float64 symmetric eigensolver (no
    gradient through it): the same value, and the same gradient ``u₁v₁ᵀ`` as through an SVD, without
    float32 LAPACK's full SVD, which failed to converge mid-training on a near-orthogonal 256-channel
    matrix (all singular values ≈ 1, what BCOP trains)."""
    with torch.no_grad():
        v = torch.linalg.eigh(w.double().mT @ w.double())[1][..., -1:].to(w.dtype)  # (..., C, 1)
    w = w / (w @ v).norm(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    for _ in range(iters):
        w = 1.5 * w - 0.5 * w @ (w.mT @ w)
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
        in_shape: ``(C, H, W)`` of the inputs (the bound is certified on that shape).
        out_channels: defaults to ``C``.
        kernel_size: odd.
        bias: learn an additive bias.
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
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def kernel(self) -> torch.Tensor:
        """The composed ``(C, C, k, k)`` kernel on ``C = max(in, out)`` channels (see the module docstring)."""
        ortho = bjorck_batched(self.params, self.bjorck_iters)
        k, c = self.kernel_size, self.channels
        eye = torch.eye(c, dtype=ortho.dtype, device=ortho.device)
        kernel = ortho[0][:, :, None, None]
        for i in range(1, 2 * (k - 1) + 1):
            u = ortho[i][:, : c // 2]
            p = u @ u.t()
            block = torch.stack([p, eye - p], dim=-1)  # (C, C, 2): [P, I − P]
            block = block[:, :, None, :] if i < k else block[:, :, :, None]  # 1×2, then 2×1
            kernel = matrix_conv(kernel, block)
        return kernel

    def operator(self) -> torch.Tensor:
        """``K[:out, :in]``: the kernel the forward pass applies."""
        return self.kernel()[: self.out_shape[0], : self.in_shape[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return conv_same(x, self.operator(), self.bias, self.padding_mode)

    def plain(self) -> nn.Module:
        return plain_conv(self.eval_operator(), self.bias, self.padding_mode)
