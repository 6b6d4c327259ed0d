r"""AOL — Almost-Orthogonal Layers (Prach & Lampert, ECCV 2022, Theorem 1 and Theorem 2):

.. math::  x \mapsto W D x + b, \qquad D = \mathrm{diag}\Big(\sum_j |W^\top W|_{ij}\Big)^{-1/2}

``‖WD‖₂ ≤ 1`` for every ``W`` (Theorem 1: ``D WᵀW D ⪯ I`` by a Gershgorin / Schur-test argument).  For a
convolution (Theorem 2) ``WᵀW`` is the convolution of the kernel's adjoint with the kernel on the input
channels — the kernel convolved with itself, ``2k−1`` taps — and ``D`` rescales the input channels by the
sum of the absolute values of all taps of each row.  ``+1e-6`` inside the root (as in the reference code)
keeps ``D`` finite for an all-zero column and only shrinks it.

Operator and certified bound: the rescaled weight ``WD`` the forward pass applies, its norm by
:mod:`stablenets.nn.norms` (the matrix, or the kernel's Fourier symbol on the actual input shape); at most 1 up
to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LipschitzLayer, PlainConv, conv_same, plain_linear

EPS = 1e-6


class AOLLinear(LipschitzLayer):
    """Dense AOL.

    Args:
        in_features, out_features: sizes (``out_features`` defaults to ``in_features``).
        bias: learn an additive bias.

    Shape: ``(*, in_features) → (*, out_features)``; initialised orthogonal.
    """

    operator_kind = "matrix"

    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = self._dense(in_features, out_features)
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def operator(self) -> torch.Tensor:
        """``W D`` (Theorem 1)."""
        d = ((self.weight.t() @ self.weight).abs().sum(1) + EPS).rsqrt()
        return self.weight * d[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.linear(x, self.operator(), self.bias)

    def plain(self) -> nn.Module:
        return plain_linear(self.eval_operator(), self.bias)


class AOLConv2d(LipschitzLayer):
    """Convolutional AOL: a ``k×k`` stride-1 'same' convolution with the AOL rescaling (Theorem 2).

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        padding_mode: ``"circular"`` (the comparison's) or ``"zeros"``.
        init: ``"dirac"`` (the identity, as the paper's blocks) or ``"orthogonal"`` (the kernel flattened to
            ``out × (in·k²)``, as the reference's first layer and head).

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    operator_kind = "kernel"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "zeros",
        init: str = "dirac",
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        if init not in ("dirac", "orthogonal"):
            raise ValueError(f"init must be 'dirac' or 'orthogonal', got {init!r}")
        weight = torch.empty(out_channels, in_shape[0], kernel_size, kernel_size)
        self.weight = nn.Parameter(nn.init.dirac_(weight) if init == "dirac" else nn.init.orthogonal_(weight))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def operator(self) -> torch.Tensor:
        """The kernel with input channel ``i`` scaled by ``(Σ_j Σ_taps |WᵀW|_ij)^(-1/2)`` (Theorem 2)."""
        k = self.weight.shape[-1]
        wt = self.weight.transpose(0, 1)  # (in, out, k, k): the input channels as a batch
        wtw = F.conv2d(wt, wt, padding=k - 1)  # (in, in, 2k−1, 2k−1): the taps of WᵀW
        d = (wtw.abs().sum((1, 2, 3)) + EPS).rsqrt()
        return self.weight * d[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        return conv_same(x, self.operator(), self.bias, self.padding_mode)

    def plain(self) -> nn.Module:
        return PlainConv(self.eval_operator(), self.bias, self.padding_mode)
