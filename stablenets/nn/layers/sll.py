r"""SLL — SDP-based Lipschitz Layers (Araujo, Havens, Delattre, Allauzen, Hu, "A Unified Algebraic Perspective on
Lipschitz Neural Networks", ICLR 2023):

.. math::  x \mapsto x - 2\, W^\top T^{-1} \sigma(Wx + b), \qquad
           T = \mathrm{diag}(t), \quad t_i = \sum_j |W W^\top|_{ij} \, \frac{q_j}{q_i}

with ``W ∈ R^{hidden×n}`` (``Wx`` a stride-1 'same' convolution in :class:`SLLConv2d`, ``Wᵀ`` its
adjoint) and learned ``q``, used as ``|q| + 10⁻⁶ > 0`` and drawn from ``N(0, 1)`` as in the reference code.
By the paper's Gershgorin argument, ``T ⪰ WWᵀ``, which makes the layer 1-Lipschitz for σ slope-restricted in
``[0, 1]`` (ReLU).  For the convolution, ``WWᵀ`` is itself a convolution on the hidden channels (the kernel
correlated with itself, ``2k−1`` taps), and ``t_i`` sums the absolute values of all its taps of row ``i``.
``t + eps`` is used (``eps`` only enlarges ``T``).

Certified bound (computed, not assumed): for two inputs, ``f(x) − f(y) = (I − 2 Vᵀ J V)(x − y)`` with
``V = T^{-1/2} W`` (the layer's :meth:`~.base.LipschitzLayer.operator`) and ``J`` diagonal with the secant slopes
of σ, in ``[0, k]``; the matrix is symmetric with spectrum in ``[1 − 2k‖V‖², 1]``, so
``Lip ≤ max(1, 2k‖V‖² − 1)``, with ``‖V‖`` certified from the stored ``W`` and the ``T⁻¹`` the forward pass
applies.  In exact arithmetic ``‖V‖ ≤ 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_count
from ..activations import get_activation
from ..norms import flush_slack
from .base import LipschitzLayer, channels_last_on_cpu, conv_same, conv_same_adjoint, detached


def _t_inverse(wwt_abs: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/(t + eps)`` with ``t_i = Σ_j |WWᵀ|_ij q̃_j/q̃_i``, ``q̃ = |q| + 10⁻⁶`` (``wwt_abs``: the ``hidden×hidden``
    row sums' terms)."""
    q = q.abs() + 1e-6
    t = (wwt_abs * q[None, :]).sum(1) / q
    return 1.0 / (t + eps)


class _SLL(LipschitzLayer):
    weight: nn.Parameter
    repr_fields = ("activation",)

    def _init(self, hidden: int, activation: str, eps: float) -> None:
        self.act, self.k = get_activation(activation, monotone=True)
        self.activation, self.eps = activation, float(eps)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.q = nn.Parameter(torch.randn(hidden))

    def t_inverse(self) -> torch.Tensor:
        """``T⁻¹`` (the diagonal), as the forward pass applies it."""
        raise NotImplementedError

    def _scaled(self, t_inv: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t_inv.sqrt().reshape(-1, *[1] * (weight.dim() - 1)) * weight

    def operator(self) -> torch.Tensor:
        """``V = T^{-1/2} W`` (the bound's operator; the forward pass applies ``W`` and ``T⁻¹``)."""
        return self._scaled(self.t_inverse(), self.weight)

    @torch.no_grad()
    def operator_norm(self, op: torch.Tensor | None = None) -> float:
        """``‖V‖`` with ``V`` formed in float64 from the ``W`` and ``T⁻¹`` the forward pass applies (plus the flush
        slack of ``W``, scaled by ``max T^{-1/2}``: ``V`` itself is never applied)."""
        if op is not None:
            return super().operator_norm(op)
        t_inv = self.t_inverse().double()
        slack = flush_slack(self.weight) * float(t_inv.max().sqrt())
        return super().operator_norm(self._scaled(t_inv, self.weight.double())) + slack

    def bound_from_norm(self, norm: float) -> float:
        return max(1.0, 2.0 * self.k * norm**2 - 1.0)

    def plain(self) -> nn.Module:
        with torch.no_grad():
            return PlainSLL(
                self.weight,
                self.bias,
                self.t_inverse(),
                self.activation,
                self.padding_mode if self.operator_kind == "kernel" else None,
            )


class SLLLinear(_SLL):
    """Dense SLL.

    Args:
        in_features: the width (residual: ``out_features``, if given, must equal it).
        hidden: rows of ``W`` (default ``in_features``).
        activation: a monotone activation with slopes in ``[0, k]`` (ReLU: ``k = 1``).
        eps: added to ``t``.

    Shape: ``(*, in_features) → (*, in_features)``.
    """

    operator_kind = "matrix"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: int | None = None,
        activation: str = "relu",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self._dense(in_features, out_features, residual=True)
        check_count(hidden=hidden)
        hidden = hidden or in_features
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(hidden, in_features)))
        bound = 1 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self._init(hidden, activation, eps)

    def t_inverse(self) -> torch.Tensor:
        return _t_inverse((self.weight @ self.weight.t()).abs(), self.q, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        z = self.act(F.linear(x, self.weight, self.bias)) * (2 * self.t_inverse())
        return x - z @ self.weight


class SLLConv2d(_SLL):
    """Convolutional SLL: ``W`` a ``k×k`` stride-1 'same' convolution to ``hidden`` channels, ``Wᵀ`` its adjoint.

    Args:
        in_shape, kernel_size: as for every convolutional family (:class:`.base.LipschitzLayer`); residual:
            ``out_channels``, if given, must equal ``C``.
        hidden: channels of ``Wx`` (default ``C``).
        activation: a monotone activation with slopes in ``[0, k]`` (ReLU: ``k = 1``).
        padding_mode: ``"zeros"`` (the comparison's) or ``"circular"``.
        eps: added to ``t``.

    Shape: ``(B, C, H, W) → (B, C, H, W)``.
    """

    operator_kind = "kernel"

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
        in_shape, _ = self._conv(in_shape, out_channels, kernel_size, padding_mode, residual=True)
        check_count(hidden=hidden)
        hidden = hidden or in_shape[0]
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(hidden, in_shape[0], kernel_size, kernel_size)))
        fan_in = in_shape[0] * kernel_size**2
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))
        self._init(hidden, activation, eps)

    def t_inverse(self) -> torch.Tensor:
        k = self.weight.shape[-1]
        wwt = F.conv2d(self.weight, self.weight, padding=k - 1)  # (hidden, hidden, 2k−1, 2k−1): the taps of WWᵀ
        return _t_inverse(wwt.abs().sum((2, 3)), self.q, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        z = self.act(conv_same(x, self.weight, self.bias, self.padding_mode)) * (2 * self.t_inverse())[:, None, None]
        return x - conv_same_adjoint(z, self.weight, self.padding_mode)  # the 2 folded into T⁻¹ (one pass less)


class PlainSLL(nn.Module):
    """``x − 2 Wᵀ(t⁻¹ ⊙ σ(Wx + b))`` with fixed ``W``, ``b``, ``t⁻¹`` (dense when ``padding_mode`` is None)."""

    def __init__(self, weight, bias, t_inverse, activation: str, padding_mode: str | None) -> None:
        super().__init__()
        self.register_buffer("weight", detached(weight))
        self.register_buffer("bias", detached(bias))
        self.register_buffer("t_inverse", detached(t_inverse))
        self.act = get_activation(activation, monotone=True)[0]
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode is None:
            return x - (self.act(F.linear(x, self.weight, self.bias)) * (2 * self.t_inverse)) @ self.weight
        x = channels_last_on_cpu(x)  # the constrained layer's layout: the same sums, bit for bit
        z = self.act(conv_same(x, self.weight, self.bias, self.padding_mode)) * (2 * self.t_inverse)[:, None, None]
        return x - conv_same_adjoint(z, self.weight, self.padding_mode)
