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
from .base import check_image_shape, check_input, check_kernel


def _step(activation: str, margin: float) -> float:
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    _, k = get_activation(activation, monotone=True)
    return 2.0 * (1.0 - margin) / k


class CPLLinear(GradientFlowBlock):
    """Dense CPL on ``in_features``; ``hidden`` rows of ``W`` (default: ``in_features``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: int | None = None,
        activation: str = "relu",
        margin: float = 0.01,
    ) -> None:
        check_count(in_features=in_features)
        check_count(hidden=hidden)
        if out_features not in (None, in_features):
            raise ValueError(
                f"CPL is residual: out_features must equal in_features ({in_features}), got {out_features}"
            )
        op = SpectralLinear(in_features, hidden or in_features, max_norm=1.0, exact=True)
        super().__init__(op, _step(activation, margin), activation, margin)
        self.in_features = self.out_features = in_features


class CPLConv2d(GradientFlowBlock):
    """Convolutional CPL on inputs of shape ``in_shape``; ``W`` a stride-1 'same' convolution to ``hidden``
    channels (default: the input's), ``Wᵀ`` its adjoint."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        hidden: int | None = None,
        activation: str = "relu",
        margin: float = 0.01,
    ) -> None:
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size)
        check_count(hidden=hidden)
        if out_channels not in (None, in_shape[0]):
            raise ValueError(
                f"CPL is residual: out_channels must equal the input's ({in_shape[0]}), got {out_channels}"
            )
        op = SpectralConv2d(in_shape, hidden or in_shape[0], kernel_size, max_norm=1.0, exact=True)
        super().__init__(op, _step(activation, margin), activation, margin)
        self.in_shape = self.out_shape = in_shape

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        check_input(x, self.in_shape, "CPLConv2d")
        return super().forward(x, n_steps)
