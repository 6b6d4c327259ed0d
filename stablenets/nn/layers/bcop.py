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

Certified bound: the operator norm of the composed kernel the forward pass applies (its Fourier symbol on
the actual input shape): 1 up to the Björck iterations' residual and rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from .base import check_image_shape, check_input, check_kernel, conv_same, conv_same_norm


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


class BCOPConv2d(nn.Module):
    """BCOP ``k×k`` convolution on inputs of shape ``in_shape`` to ``out_channels`` (default: the input's);
    circular padding (exactly orthogonal for equal channels) or zero padding (norm ≤ 1)."""

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
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, padding_mode, in_shape)
        check_count(out_channels=out_channels)
        check_count(bjorck_iters=bjorck_iters)
        out_channels = out_channels or in_shape[0]
        c = max(in_shape[0], out_channels)
        self.in_shape, self.out_shape = in_shape, (out_channels, *in_shape[1:])
        self.work_shape = (c, *in_shape[1:])
        self.padding_mode, self.bjorck_iters, self.kernel_size = padding_mode, bjorck_iters, kernel_size
        self.in_channels, self.out_channels, self.channels = in_shape[0], out_channels, c
        params = torch.stack([nn.init.orthogonal_(torch.empty(c, c)) for _ in range(2 * (kernel_size - 1) + 1)])
        self.params = nn.Parameter(params)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def kernel(self) -> torch.Tensor:
        """The composed ``(C, C, k, k)`` kernel (see the module docstring)."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "BCOPConv2d")
        if self.out_channels > self.in_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        z = conv_same(x, self.kernel(), None, self.padding_mode)[:, : self.out_channels]
        return z if self.bias is None else z + self.bias[:, None, None]

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(conv_same_norm(self.kernel(), self.work_shape, self.padding_mode))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding_mode={self.padding_mode}, bjorck_iters={self.bjorck_iters}"
        )
