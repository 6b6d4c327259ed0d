r"""The paper's gradient-flow block as a layer family: a learned flow time ``T`` and the sub-step count of eq. (19).

.. math::  \dot x = -A^\top\sigma(Ax + b), \qquad x \mapsto x - h A^\top \sigma(Ax + b) \;\; (n \text{ times}),
           \qquad h = \frac{T}{n}, \quad n = \Big\lceil \frac{T k (1+\text{margin}) \|A\|^2}{2} \Big\rceil
           \quad (18), (19)

:class:`~stablenets.nn.layers.CPLConv2d` is the one-step case with ``T = 2(1 − margin)/k``.  Here ``A = W/‖W‖`` is
normalised as in CPL (a stride-1 'same' convolution, circular padding by default: its norm, estimated in training
and certified in eval mode, is exact on the torus, so the sub-step count in training and in evaluation agree) and
``T = T₀·exp(s)`` is learned (``s`` starts at 0: the block starts as CPL, ``T₀ = 2(1 − margin)/k``; weight decay
pulls it back there), capped at ``T_max`` so that the cost of a forward is bounded
(``n ≤ ⌈T_max k (1 + margin)/2⌉``).  ``n`` follows ``T`` and the norm estimate after every optimizer step
(``PowerMethodCallback``), so the forward reads no device value; ``h = T/n`` carries the gradient to ``s``.

Each sub-step is 1-Lipschitz by eq. (19) with the certified norm in eval mode, so ``lipschitz_bound() = 1``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...checks import check_positive
from ..gradient_flow import GradientFlowBlock
from .base import LipschitzLayer
from .cpl import _step, conv_operator


class GradientFlowConv2d(GradientFlowBlock, LipschitzLayer):
    """The paper's block with a learned ``T`` (see the module docstring).

    Args:
        in_shape, kernel_size: as for every convolutional family (:class:`.base.LipschitzLayer`); residual:
            ``out_channels``, if given, must equal ``C``.
        hidden: channels of ``Ax`` (default ``C``).
        activation: a monotone activation (ReLU).
        margin: the relative margin of eq. (19) in training.
        T_max: the largest flow time, as a multiple of CPL's step ``T₀`` (``n ≤ ⌈T_max T₀ k (1+margin)/2⌉``).
        padding_mode: ``"circular"`` (exact certified norm) or ``"zeros"``.

    Shape: ``(B, C, H, W) → (B, C, H, W)``.
    """

    operator_kind = "kernel"
    repr_fields = ("activation",)

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        hidden: int | None = None,
        activation: str = "relu",
        margin: float = 0.01,
        T_max: float = 4.0,
        padding_mode: str = "circular",
    ) -> None:
        self._conv(in_shape, out_channels, kernel_size, padding_mode, residual=True)
        check_positive(T_max=T_max)
        if T_max < 1:
            raise ValueError(f"T_max is a multiple of CPL's step and must be >= 1, got {T_max}")
        T0 = _step(activation, margin)
        self.T0, self.T_max = T0, float(T_max) * T0
        super().__init__(conv_operator(self.in_shape, hidden, kernel_size, padding_mode), T0, activation, margin)
        self.log_scale = nn.Parameter(torch.zeros(()))  # T = T0 exp(s): the block starts as CPL
        self.padding_mode = padding_mode

    def time(self) -> torch.Tensor:
        """``T`` as a tensor (with its gradient), capped at ``T_max``."""
        return (self.T0 * self.log_scale.exp()).clamp(max=self.T_max)

    def flow_time(self) -> float:
        return float(self.time().detach()) if hasattr(self, "log_scale") else self.T  # (T0 while being built)

    def max_flow_time(self) -> float:
        return self.T_max

    def step_size(self, n: int) -> float | torch.Tensor:
        return self.time() / n if self.training else self.flow_time() / n  # eval: the exported number

    def operator(self) -> torch.Tensor:
        return self.op.effective_weight()

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        self.check_input(x)
        return super().forward(x, n_steps)

    def lipschitz_bound(self) -> float:
        return GradientFlowBlock.lipschitz_bound(self)

    def plain(self):
        return GradientFlowBlock.plain(self)

    def extra_repr(self) -> str:
        return f"{LipschitzLayer.extra_repr(self)}, T={self.flow_time():.4g} (max {self.T_max:.4g})"
