r"""CPL — the Convex Potential Layer (Meunier, Delattre, Araujo, Allauzen, "A Dynamical System Perspective for
Lipschitz Neural Networks", ICML 2022):

.. math::  x \mapsto x - \frac{2}{\|W\|_2^2} W^\top \sigma(Wx + b)

This is the paper's gradient-flow block (:class:`~stablenets.nn.gradient_flow.GradientFlowBlock`, eq. (18),
(19)) with one Euler sub-step of the largest admissible size; the classes here only fix its
parametrisation, they add no mechanism of their own.  ``A = W/‖W‖`` is the operator normalised to norm
exactly 1 (:class:`~stablenets.nn.spectral.SpectralLinear` / ``SpectralConv2d`` with ``exact=True``:
the power-method estimate in training, the certified norm in eval mode) and the step is
``h = 2(1 − margin)/k``, so that ``h k (1 + margin) ‖A‖² / 2 < 1``: one sub-step whenever the training
estimate is within ``margin`` of the norm (the power method's under-estimate), and always in eval mode.
For a positively homogeneous σ (ReLU) ``x − h Aᵀσ(Ax + b)`` equals CPL's ``x − (h/‖W‖²) Wᵀσ(Wx + b')`` with
``b' = ‖W‖ b``.  ``lipschitz_bound() = 1`` by eq. (19) with the certified norm.

As every tracked operator, the estimate is advanced by ``PowerMethodCallback`` after each optimizer step.
"""

from __future__ import annotations

import torch

from ...checks import check_count
from ..activations import get_activation
from ..gradient_flow import GradientFlowBlock
from ..spectral import SpectralConv2d, SpectralLinear
from .base import LipschitzLayer


def _step(activation: str, margin: float) -> float:
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    _, k = get_activation(activation, monotone=True)
    return 2.0 * (1.0 - margin) / k


def conv_operator(in_shape, hidden: int | None, kernel_size: int, padding_mode: str) -> SpectralConv2d:
    """``W`` of a convolutional CPL (or gradient-flow) block: a stride-1 'same' convolution to ``hidden``
    channels (default ``C``), xavier-normal as the reference code, whose normalisation carries the gradient of
    ``σ̂ = ⟨Au, v⟩`` in training (the reference's ``h = 2/σ̂²``)."""
    check_count(hidden=hidden)
    op = SpectralConv2d(
        in_shape,
        hidden or in_shape[0],
        kernel_size,
        max_norm=1.0,
        exact=True,
        padding_mode=padding_mode,
        init="xavier_normal",
    )
    op.norm_gradient = True
    return op


class _CPL(GradientFlowBlock, LipschitzLayer):
    """A gradient-flow block as a layer family: its operator is the normalised ``A`` the forward pass applies,
    its bound 1 (eq. 19 with the certified norm), its plain form the block's Euler sub-steps."""

    def operator(self) -> torch.Tensor:
        return self.op.effective_weight()

    def lipschitz_bound(self) -> float:
        return GradientFlowBlock.lipschitz_bound(self)

    def plain(self):
        return GradientFlowBlock.plain(self)


class CPLLinear(_CPL):
    """Dense CPL.

    Args:
        in_features: the width (residual: ``out_features``, if given, must equal it).
        hidden: rows of ``W`` (default ``in_features``).
        activation: a monotone activation (ReLU).
        margin: the step is ``2(1 − margin)/k``.

    Shape: ``(*, in_features) → (*, in_features)``.
    """

    operator_kind = "matrix"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: int | None = None,
        activation: str = "relu",
        margin: float = 0.01,
    ) -> None:
        check_count(in_features=in_features, hidden=hidden)
        op = SpectralLinear(in_features, hidden or in_features, max_norm=1.0, exact=True)
        super().__init__(op, _step(activation, margin), activation, margin)
        self._dense(in_features, out_features, residual=True)

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        self.check_input(x)
        return super().forward(x, n_steps)


class CPLConv2d(_CPL):
    """Convolutional CPL: ``W`` a stride-1 'same' convolution to ``hidden`` channels, ``Wᵀ`` its adjoint.

    Args:
        in_shape, kernel_size: as for every convolutional family (:class:`.base.LipschitzLayer`); residual:
            ``out_channels``, if given, must equal ``C``.
        hidden: channels of ``Wx`` (default ``C``).
        activation: a monotone activation (ReLU).
        margin: the step is ``2(1 − margin)/k``.
        padding_mode: ``"zeros"`` or ``"circular"`` (the comparison's: the certified norm is then exact, so the
            network evaluated is the network trained; the zero-padded norm's certified bound is loose on small
            grids — 1.12× the norm at 4×4 with 128 channels — and would shorten the eval-mode step).

    Shape: ``(B, C, H, W) → (B, C, H, W)``; ``W`` initialised xavier-normal (as the reference code).
    """

    operator_kind = "kernel"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        hidden: int | None = None,
        activation: str = "relu",
        margin: float = 0.01,
        padding_mode: str = "zeros",
    ) -> None:
        self._conv(in_shape, out_channels, kernel_size, padding_mode, residual=True)
        super().__init__(
            conv_operator(self.in_shape, hidden, kernel_size, padding_mode),
            _step(activation, margin),
            activation,
            margin,
        )
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        self.check_input(x)
        return super().forward(x, n_steps)
