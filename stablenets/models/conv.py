"""Image classifiers of the paper's Section 6.2: a convolutional non-expansive net and its ResNet twin.

Both share one structure — for each stage ``s``: a lifting convolution to ``channels[s]``, ``blocks``
shape-preserving blocks, a 2×2 average pool — then a linear head on the flattened features.  Only the
blocks (and the lifting convolutions' constraint) differ:

* ``ConvNonExpansiveNet``: gradient-flow blocks (eq. 18-19 with ``A`` a convolution), average pooling
  (Lipschitz 1/2) and lifting convolutions capped at norm ``lift_max_norm`` in the forward pass.
  ``lipschitz_bound`` is the product of the parts' certified bounds (``stablenets.nn.bounds``).  With a
  prescribed ``L`` the lifts are normalised to norm exactly ``lift_max_norm`` (1 when unset), the head to
  norm 1, and the output is scaled by ``L`` over the features' bound (lifts and pools), so the whole net is
  ``L``-Lipschitz and reports ``L``.  Why the default preset holds its lifts at norm 4 rather than 1: see
  ``docs/design-notes.md``.
* ``ConvResNet``: residual blocks ``x + B σ(Ax + b)`` (snippet 2) and plain lifting convolutions; no bound.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_count, check_positive
from ..nn.bounds import lipschitz_bound
from ..nn.gradient_flow import NonExpansiveConvBlock
from ..nn.residual import ConvResidualBlock
from ..nn.spectral import SpectralConv2d, SpectralLinear


def _check(in_shape, channels, blocks) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"convolutional models need image inputs (C, H, W), got shape {tuple(in_shape)}")
    if not channels or any((not isinstance(c, int)) or c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty list of positive integers, got {list(channels)}")
    check_count(blocks=blocks)
    return tuple(int(s) for s in in_shape)


class _ConvNet(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], stages: list[nn.Module], feat_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_shape = in_shape
        self.features = nn.Sequential(*stages, nn.Flatten())
        self.head = nn.Linear(feat_dim, out_dim)

    @property
    def body(self) -> nn.Module:
        """Everything before the head (the feature extractor)."""
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvNonExpansiveNet(_ConvNet):
    """The convolutional non-expansive classifier of Section 6.2: gradient-flow blocks between lifts and pools.

    Per stage ``s``: a 3×3 lifting convolution to ``channels[s]`` (norm-constrained), ``blocks``
    convolutional gradient-flow blocks ``x ↦ x − h Aᵀσ(Ax + b)`` (eq. 18-19, each 1-Lipschitz) and a 2×2
    average pool (Lipschitz 1/2); then a linear head on the flattened features.  :meth:`lipschitz_bound` is
    the product of the parts' certified bounds (see the module docstring).

    Args:
        in_shape: the input's shape ``(C, H, W)`` (no batch axis), from the data module.
        out_dim: the number of outputs (classes), from the data module.
        channels: the width of each stage (the lifting convolution's output channels).
        blocks: the number of gradient-flow blocks in every stage.
        T: the flow time of each block; it takes ``n = ⌈T k (1 + margin) ‖A‖² / 2⌉`` Euler sub-steps of
            ``h = T/n`` (eq. 19, ``k`` the activation's Lipschitz constant).
        activation: the blocks' ``σ``, a non-decreasing activation of :mod:`stablenets.nn.activations`
            (``"relu"`` by default).
        margin: the relative safety margin of the training step-size rule (eq. 19).
        max_norm: a cap on each block's ``‖A‖`` (``A·min(1, c/‖A‖)``): it bounds the sub-step count and
            leaves the guarantee unchanged; ``None``: uncapped.
        L: a prescribed Lipschitz bound (``lipschitz.L``): the lifts are normalised to norm exactly
            ``lift_max_norm`` (1 when that is ``None``), the head to norm 1, and the output is scaled by ``L``
            over the features' bound, so the net is ``L``-Lipschitz; ``None``: a free head whose norm enters
            the bound.
        hidden_mult: each block's ``A`` maps ``channels[s]`` to ``hidden_mult · channels[s]`` channels
            (``Aᵀ`` maps back).
        lift_max_norm: the lifting convolutions are rescaled to norm at most this (exactly this when ``L`` is
            set); ``None``: free lifts whose certified norms enter the bound.

    Shape: ``(B, *in_shape) → (B, out_dim)``; each stage halves ``H`` and ``W`` (rounded down).
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        channels=(8, 16),
        blocks: int = 2,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        max_norm: float | None = None,
        L: float | None = None,
        hidden_mult: int = 1,
        lift_max_norm: float | None = 1.0,
    ) -> None:
        check_count(hidden_mult=hidden_mult)
        check_positive(T=T, L=L, lift_max_norm=lift_max_norm)
        shape = _check(in_shape, channels, blocks)
        exact = L is not None
        if exact and lift_max_norm is None:  # a prescribed L needs bounded lifts
            lift_max_norm = 1.0
        stages: list[nn.Module] = []
        for c in channels:
            lift = SpectralConv2d(shape, c, max_norm=lift_max_norm, exact=exact)
            shape = lift.out_shape
            stages.append(lift)
            stages += [
                NonExpansiveConvBlock(
                    shape, c * hidden_mult, T=T, activation=activation, margin=margin, max_norm=max_norm
                )
                for _ in range(blocks)
            ]
            stages.append(nn.AvgPool2d(2))
            shape = (shape[0], shape[1] // 2, shape[2] // 2)
        super().__init__(tuple(in_shape), stages, math.prod(shape), out_dim)
        self.L, self.out_scale = L, None
        if exact:  # 1-Lipschitz head, output scaled by L / (the features' bound): the net is L-Lipschitz
            self.head = SpectralLinear(math.prod(shape), out_dim, max_norm=1.0, exact=True)
            # rounded down, so that the reported bound (features × out_scale, the same product) is <= L
            self.out_scale = math.nextafter(L / self.body_bound(), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.out_scale is None else self.out_scale * out

    def body_bound(self) -> float:
        return lipschitz_bound(self.features, self.in_shape, "features")

    def lipschitz_bound(self) -> float:
        bound = self.body_bound() * lipschitz_bound(self.head, self.head.weight.shape[1:], "head")
        return bound if self.out_scale is None else bound * self.out_scale


class ConvResNet(_ConvNet):
    """The ResNet twin of :class:`ConvNonExpansiveNet` (Section 6.2): the same stages, residual blocks, no bound.

    Per stage ``s``: a plain 3×3 lifting convolution to ``channels[s]``, ``blocks`` residual blocks
    ``x + B σ(Ax + b)`` (snippet 2, ``A`` and ``B`` 3×3 convolutions) and a 2×2 average pool; then a linear
    head on the flattened features.  Nothing is constrained and no Lipschitz bound is claimed.

    Args:
        in_shape: the input's shape ``(C, H, W)`` (no batch axis), from the data module.
        out_dim: the number of outputs (classes), from the data module.
        channels: the width of each stage (the lifting convolution's output channels).
        blocks: the number of residual blocks in every stage.
        hidden_mult: each block's ``A`` maps ``channels[s]`` to ``hidden_mult · channels[s]`` channels
            (``B`` maps back).
        activation: the blocks' ``σ``, an activation of :mod:`stablenets.nn.activations` (``"relu"`` by
            default).

    Shape: ``(B, *in_shape) → (B, out_dim)``; each stage halves ``H`` and ``W`` (rounded down).
    """

    def __init__(
        self, in_shape, out_dim: int, channels=(8, 16), blocks: int = 2, hidden_mult: int = 1, activation: str = "relu"
    ) -> None:
        shape = _check(in_shape, channels, blocks)
        check_count(hidden_mult=hidden_mult)
        stages: list[nn.Module] = []
        for c in channels:
            stages.append(nn.Conv2d(shape[0], c, 3, padding=1))
            stages += [ConvResidualBlock(c, c * hidden_mult, activation) for _ in range(blocks)]
            stages.append(nn.AvgPool2d(2))
            shape = (c, shape[1] // 2, shape[2] // 2)
        super().__init__(tuple(in_shape), stages, math.prod(shape), out_dim)
