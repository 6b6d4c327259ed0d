r"""Non-expansive blocks: explicit Euler steps of a gradient flow with a convex potential (Section 3.2).

.. math::  \dot x = -\nabla V(x) = -A^\top\sigma(Ax + b), \qquad
           x \mapsto x - h A^\top \sigma(Ax + b), \qquad h = \frac{T}{n} \le \frac{2}{k\|A\|_2^2}  \quad (18), (19)

``V(x) = 1ᵀγ(Ax + b)`` with ``γ' = σ`` is convex when σ is non-decreasing, and ``∇V`` is ``k‖A‖²``-Lipschitz
when σ is ``k``-Lipschitz (Exercises 6, 15), so each Euler sub-step with ``h`` as in eq. (19) is
1-Lipschitz and so is the block.  With ``A`` a convolution, ``Aᵀ`` is its adjoint.  With ``h = 2/‖A‖²`` this
is the Convex Potential Layer of Meunier et al.

The step-size rule, by mode:

* **training**: ``n`` is the smallest integer with ``T k (1 + margin) σ² / 2 ≤ n``, ``σ`` the power-method
  estimate; ``n`` is a Python integer refreshed by ``PowerMethodCallback`` after every optimizer step (and
  when a checkpoint is loaded), so the forward pass never reads a device value;
* **eval**: the same rule with the *certified* norm and ``eval_margin`` (default 1e-6), a relative safety
  margin for the rounding of the forward pass's own arithmetic.

``max_norm = c`` (optional) uses ``A·min(1, c/‖A‖)`` in place of ``A`` — still a gradient flow of a convex
potential, so the guarantee is unchanged — which caps the sub-step count at ``⌈T k c² (1+margin)/2⌉``
when the optimizer inflates ``‖A‖`` (the cost of an epoch otherwise grows with ``‖A‖²``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import TrainingDiverged, check_nonnegative, check_positive
from .activations import get_activation
from .convolution import channels_last_on_cpu, conv_same, conv_same_adjoint
from .power import conv_ops
from .spectral import SpectralConv2d, SpectralLinear, SpectralOperator

#: sub-steps of one block beyond which a forward pass cannot be meant (``‖A‖`` has blown up: training diverged)
MAX_SUBSTEPS = 10_000


def substeps_for(norm: float, T: float, k: float, margin: float = 0.0) -> int:
    """Smallest ``n ≥ 1`` with ``h = T/n ≤ 2/(k (1+margin) ‖A‖²)`` (eq. 19); :class:`TrainingDiverged` when ``‖A‖``
    is not finite or asks for more than :data:`MAX_SUBSTEPS`."""
    n = T * k * (1.0 + margin) * float(norm) ** 2 / 2.0
    if not math.isfinite(n):
        raise TrainingDiverged(
            f"a gradient-flow block's operator norm is {float(norm)}: its weights are not finite. Training diverged: "
            "lower task.optimizer.lr"
        )
    if n > MAX_SUBSTEPS:
        raise TrainingDiverged(
            f"a gradient-flow block's operator norm is {float(norm):.3g}: eq. (19) would need {n:.3g} sub-steps per "
            f"forward (at most {MAX_SUBSTEPS:,} are taken). Training diverged: lower task.optimizer.lr, or cap the "
            "norm (model.max_norm where the model has it)"
        )
    return max(1, math.ceil(n))


def substep_budget(module: nn.Module) -> int:
    """Sub-steps of one forward pass of ``module``: the sum of ``n_steps`` over its gradient-flow blocks, in the
    mode it is in (the cost of a forward grows with it; a norm cap bounds it, see :func:`substep_cap`)."""
    return sum(b.n_steps for b in module.modules() if isinstance(b, GradientFlowBlock))


def substep_cap(module: nn.Module) -> int | None:
    """Upper bound of :func:`substep_budget` in either mode when every block's operator has a norm cap
    ``max_norm = c``: ``Σ ⌈T k c² (1 + max(margin, eval_margin)) / 2⌉``; ``None`` when some block has none."""
    blocks = [b for b in module.modules() if isinstance(b, GradientFlowBlock)]
    if any(b.max_norm is None for b in blocks):
        return None
    return sum(substeps_for(b.max_norm, b.max_flow_time(), b.k, max(b.margin, b.eval_margin)) for b in blocks)


def euler_substeps(x: torch.Tensor, n: int, h: float, op, op_t, act) -> torch.Tensor:
    """``n`` explicit Euler sub-steps ``x ← x − h Aᵀσ(Ax + b)`` of eq. (18): ``op(x) = Ax + b``, ``op_t(v) = Aᵀv``.

    One place for the step, shared by the block and its exported copy (``runner/export.py``), which must
    compute the same numbers.  ``x − h·v`` is one fused operation (``torch.sub(..., alpha=h)``)."""
    x = channels_last_on_cpu(x)
    for _ in range(n):
        x = torch.sub(x, op_t(act(op(x))), alpha=h) if not torch.is_tensor(h) else x - h * op_t(act(op(x)))
    return x


def _refresh_after_load(block: GradientFlowBlock, _keys) -> None:
    block.refresh_substeps()  # the loaded estimate sets the training sub-step count


class GradientFlowBlock(nn.Module):
    """``n`` explicit Euler sub-steps of ``ẋ = −Aᵀσ(Ax + b)`` over time ``T`` (see the module docstring)."""

    def __init__(
        self,
        op: SpectralOperator,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        eval_margin: float = 1e-6,
    ) -> None:
        super().__init__()
        check_positive(T=T)
        check_nonnegative(margin=margin, eval_margin=eval_margin)
        self.op = op
        self.T, self.margin, self.eval_margin = float(T), float(margin), float(eval_margin)
        self.activation = activation
        self.act, self.k = get_activation(activation, monotone=True)
        self.refresh_substeps()
        self.register_load_state_dict_post_hook(_refresh_after_load)  # a module-level function: picklable

    @property
    def max_norm(self) -> float | None:
        return self.op.max_norm

    def flow_time(self) -> float:
        """``T``, the time the block integrates over (a host number: it sets the sub-step count)."""
        return self.T

    def max_flow_time(self) -> float:
        """The largest ``T`` the block can have (a learned ``T`` is capped): bounds its sub-step count."""
        return self.T

    def step_size(self, n: int) -> float | torch.Tensor:
        """``h = T/n`` as the forward pass applies it (a tensor where ``T`` is learned, so that it gets a gradient)."""
        return self.T / n

    def refresh_substeps(self, estimate: float | None = None) -> None:
        """Training sub-step count from the norm estimate (read from the operator when not given)."""
        if estimate is None and self.op.norm_estimate.is_meta:  # built on the meta device: no value to read
            self._n_train = 1
            return
        estimate = float(self.op.norm_estimate) if estimate is None else estimate
        self._n_train = substeps_for(self.op.constrained_norm(estimate), self.flow_time(), self.k, self.margin)

    @property
    def n_steps(self) -> int:
        if self.training:
            return self._n_train
        return self._eval_substeps(self.op.lipschitz_bound())

    def _eval_substeps(self, norm: float) -> int:
        return substeps_for(norm, self.flow_time(), self.k, self.eval_margin)

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        if self.training:
            w, n = self.op.effective_weight(), self._n_train
        else:  # the applied weight and the step count from one certified check of the weight
            w, norm = self.op.eval_weight()
            n = self._eval_substeps(norm)
        n = n_steps or n
        op = self.op
        return euler_substeps(
            x, n, self.step_size(n), lambda z: op.matvec(z, w, op.bias), lambda v: op.rmatvec(v, w), self.act
        )

    def lipschitz_bound(self) -> float:
        """1, by eq. (19) with the certified norm (eval-mode sub-steps)."""
        return 1.0

    def plain(self) -> FlowSteps:
        """The block frozen at its eval-mode weight and sub-step count: :class:`FlowSteps`."""
        return FlowSteps.of(self)


class NonExpansiveBlock(GradientFlowBlock):
    """Dense block of snippet 1: ``A ∈ R^{hidden×dim}``."""

    def __init__(
        self,
        dim: int,
        hidden: int | None = None,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        max_norm: float | None = None,
    ) -> None:
        super().__init__(SpectralLinear(dim, hidden or dim, max_norm=max_norm), T, activation, margin)


class NonExpansiveConvBlock(GradientFlowBlock):
    """Convolutional block: ``A`` a stride-1 'same' convolution on ``in_shape``, ``Aᵀ`` its adjoint."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        hidden: int | None = None,
        kernel_size: int = 3,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        max_norm: float | None = None,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a shape-preserving block, got {kernel_size}")
        op = SpectralConv2d(in_shape, hidden or int(in_shape[0]), kernel_size, max_norm=max_norm)
        super().__init__(op, T, activation, margin)
        self.in_shape = op.in_shape


class FlowSteps(nn.Module):
    """``n`` explicit Euler sub-steps ``x ← x − h Aᵀσ(Ax + b)`` with fixed ``A``, ``b``, ``n``, ``h = T/n`` (eq. 18):
    a gradient-flow block frozen at its eval-mode weight and sub-step count — the same operations in the same
    order (:func:`euler_substeps`), so it computes the block's eval-mode numbers; ``A`` dense or a convolution
    (``Aᵀ`` its exact adjoint, computed as the layer computes it: :func:`stablenets.nn.power.conv_ops`)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        n: int,
        T: float,
        activation: str,
        conv: dict | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.n, self.T, self.activation, self.conv = int(n), float(T), activation, conv
        self.act = get_activation(activation, monotone=True)[0]

    @classmethod
    @torch.no_grad()
    def of(cls, block: GradientFlowBlock) -> FlowSteps:
        w, norm = block.op.eval_weight()  # the applied weight and the sub-step count, as the eval forward
        n = block._eval_substeps(norm)
        conv = None
        if isinstance(block.op, SpectralConv2d):
            op = block.op
            conv = {
                "in_shape": tuple(op.in_shape),
                "stride": op.stride,
                "padding": op.padding,
                "padding_mode": op.padding_mode,
            }
        elif not isinstance(block.op, SpectralLinear):
            raise TypeError(f"no plain form of a gradient-flow block over {type(block.op).__name__}")
        return cls(w, block.op.bias, n, block.flow_time(), block.activation, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, c = self.T / self.n, self.conv
        if c is not None and c.get("padding_mode") == "circular":
            return euler_substeps(
                x,
                self.n,
                h,
                lambda z: conv_same(z, self.weight, self.bias, "circular"),
                lambda v: conv_same_adjoint(v, self.weight, "circular"),
                self.act,
            )
        if c is not None:  # the layer's own adjoint, built once per forward
            _, adjoint = conv_ops(self.weight, c["in_shape"], c["stride"], c["padding"])
            return euler_substeps(
                x,
                self.n,
                h,
                lambda z: F.conv2d(z, self.weight, self.bias, stride=c["stride"], padding=c["padding"]),
                adjoint,
                self.act,
            )
        return euler_substeps(
            x, self.n, h, lambda z: F.linear(z, self.weight, self.bias), lambda v: v @ self.weight, self.act
        )

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, n={self.n}, T={self.T}, activation={self.activation}"
