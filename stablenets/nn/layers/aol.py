r"""AOL — Almost-Orthogonal Layers (Prach & Lampert, ECCV 2022, Theorem 1 and Theorem 2):

.. math::  x \mapsto W D x + b, \qquad D = \mathrm{diag}\Big(\sum_j |W^\top W|_{ij}\Big)^{-1/2}

``‖WD‖₂ ≤ 1`` for every ``W`` (Theorem 1: ``D WᵀW D ⪯ I`` by a Gershgorin / Schur-test argument).  For a
convolution (Theorem 2) ``WᵀW`` is the convolution of the kernel's adjoint with the kernel on the input
channels — the kernel convolved with itself, ``2k−1`` taps — and ``D`` rescales the input channels by the
sum of the absolute values of all taps of each row.  ``+1e-6`` inside the root (as in the reference code)
keeps ``D`` finite for an all-zero column and only shrinks it.

Certified bound: the norm of the rescaled weight ``WD`` the forward pass applies, by SVD (dense) or by its
Fourier symbol on the actual input shape (convolution); at most 1 up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from ..power import dense_norm_bound
from .base import check_image_shape, check_input, check_kernel, conv_same, conv_same_norm, dense_features

EPS = 1e-6


class AOLLinear(nn.Module):
    """Dense AOL ``in_features → out_features`` (default: square), initialised orthogonal."""

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = dense_features(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        """``W D`` (Theorem 1)."""
        d = ((self.weight.t() @ self.weight).abs().sum(1) + EPS).rsqrt()
        return self.weight * d[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(dense_norm_bound(self.effective_weight()))


class AOLConv2d(nn.Module):
    """Convolutional AOL on inputs of shape ``in_shape`` to ``out_channels`` (default: the input's), a ``k×k``
    stride-1 'same' convolution with zero or circular padding, initialised to the identity (Dirac) as in the paper."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, padding_mode, in_shape)
        check_count(out_channels=out_channels)
        out_channels = out_channels or in_shape[0]
        self.in_shape, self.padding_mode = in_shape, padding_mode
        self.out_shape = (out_channels, *in_shape[1:])
        self.weight = nn.Parameter(nn.init.dirac_(torch.empty(out_channels, in_shape[0], kernel_size, kernel_size)))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        """The kernel with input channel ``i`` scaled by ``(Σ_j Σ_taps |WᵀW|_ij)^(-1/2)`` (Theorem 2)."""
        k = self.weight.shape[-1]
        wt = self.weight.transpose(0, 1)  # (in, out, k, k): the input channels as a batch
        wtw = F.conv2d(wt, wt, padding=k - 1)  # (in, in, 2k−1, 2k−1): the taps of WᵀW
        d = (wtw.abs().sum((1, 2, 3)) + EPS).rsqrt()
        return self.weight * d[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "AOLConv2d")
        return conv_same(x, self.effective_weight(), self.bias, self.padding_mode)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        return float(conv_same_norm(self.effective_weight(), self.in_shape, self.padding_mode))
