r"""SLL — SDP-based Lipschitz Layers (Araujo, Havens, Delattre, Allauzen, Hu, "A Unified Algebraic Perspective on
Lipschitz Neural Networks", ICLR 2023):

.. math::  x \mapsto x - 2\, W^\top T^{-1} \sigma(Wx + b), \qquad
           T = \mathrm{diag}(t), \quad t_i = \sum_j |W W^\top|_{ij} \, \frac{q_j}{q_i}

with ``W ∈ R^{hidden×n}`` (``Wx`` a stride-1 'same' convolution in :class:`SLLConv2d`, ``Wᵀ`` its
adjoint) and learned ``q > 0`` (stored as ``log q``).  By the paper's Gershgorin argument, ``T ⪰ WWᵀ``,
which makes the layer 1-Lipschitz for σ slope-restricted in ``[0, 1]`` (ReLU).  For the convolution,
``WWᵀ`` is itself a convolution on the hidden channels (the kernel correlated with itself, ``2k−1`` taps),
and ``t_i`` sums the absolute values of all its taps of row ``i``.  ``t + eps`` is used (``eps`` only
enlarges ``T``).

Certified bound (computed, not assumed): for two inputs, ``f(x) − f(y) = (I − 2 Vᵀ J V)(x − y)`` with
``V = T^{-1/2} W`` and ``J`` diagonal with the secant slopes of σ, in ``[0, k]``; the matrix is symmetric with
spectrum in ``[1 − 2k‖V‖², 1]``, so ``Lip ≤ max(1, 2k‖V‖² − 1)``, with ``‖V‖`` certified (SVD / Fourier symbol)
from the stored ``W`` and the ``T⁻¹`` the forward pass applies.  In exact arithmetic ``‖V‖ ≤ 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from ..activations import get_activation
from ..power import dense_norm_bound
from .base import check_image_shape, check_input, check_kernel, conv_same, conv_same_adjoint, conv_same_norm


def _t_inverse(wwt_abs: torch.Tensor, log_q: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/(t + eps)`` with ``t_i = Σ_j |WWᵀ|_ij q_j/q_i`` (``wwt_abs``: the ``hidden×hidden`` row sums' terms)."""
    t = (wwt_abs * torch.exp(log_q[None, :] - log_q[:, None])).sum(1)
    return 1.0 / (t + eps)


def _bound(v_norm: float, k: float) -> float:
    return max(1.0, 2.0 * k * v_norm**2 - 1.0)


class _SLL(nn.Module):
    weight: nn.Parameter

    def _init(self, hidden: int, activation: str, eps: float) -> None:
        self.act, self.k = get_activation(activation, monotone=True)
        self.activation, self.eps = activation, float(eps)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.log_q = nn.Parameter(torch.zeros(hidden))

    def t_inverse(self) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, activation={self.activation}"


class SLLLinear(_SLL):
    """Dense SLL on ``in_features`` with ``hidden`` rows of ``W`` (default ``in_features``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: int | None = None,
        activation: str = "relu",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_count(in_features=in_features)
        check_count(hidden=hidden)
        if out_features not in (None, in_features):
            raise ValueError(
                f"SLL is residual: out_features must equal in_features ({in_features}), got {out_features}"
            )
        hidden = hidden or in_features
        self.in_features = self.out_features = in_features
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(hidden, in_features)))
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-1 / math.sqrt(in_features), 1 / math.sqrt(in_features)))
        self._init(hidden, activation, eps)

    def t_inverse(self) -> torch.Tensor:
        return _t_inverse((self.weight @ self.weight.t()).abs(), self.log_q, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(F.linear(x, self.weight, self.bias)) * self.t_inverse()
        return x - 2 * (z @ self.weight)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        v = self.t_inverse().double().sqrt()[:, None] * self.weight.double()
        return _bound(float(dense_norm_bound(v)), self.k)


class SLLConv2d(_SLL):
    """Convolutional SLL on inputs of shape ``in_shape``: ``W`` a ``k×k`` stride-1 'same' convolution to
    ``hidden`` channels (default: the input's), zero or circular padding (the comparison uses circular)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        hidden: int | None = None,
        activation: str = "relu",
        padding_mode: str = "zeros",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, padding_mode, in_shape)
        check_count(hidden=hidden)
        if out_channels not in (None, in_shape[0]):
            raise ValueError(
                f"SLL is residual: out_channels must equal the input's ({in_shape[0]}), got {out_channels}"
            )
        hidden = hidden or in_shape[0]
        self.in_shape = self.out_shape = in_shape
        self.padding_mode = padding_mode
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(hidden, in_shape[0], kernel_size, kernel_size)))
        fan_in = in_shape[0] * kernel_size**2
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))
        self._init(hidden, activation, eps)

    def t_inverse(self) -> torch.Tensor:
        k = self.weight.shape[-1]
        wwt = F.conv2d(self.weight, self.weight, padding=k - 1)  # (hidden, hidden, 2k−1, 2k−1): the taps of WWᵀ
        return _t_inverse(wwt.abs().sum((2, 3)), self.log_q, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "SLLConv2d")
        z = self.act(conv_same(x, self.weight, self.bias, self.padding_mode)) * self.t_inverse()[:, None, None]
        return x - 2 * conv_same_adjoint(z, self.weight, self.padding_mode)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        v = self.t_inverse().double().sqrt()[:, None, None, None] * self.weight.double()
        return _bound(float(conv_same_norm(v, self.in_shape, self.padding_mode)), self.k)
