r"""A convolutional classifier that is 1-Lipschitz by construction, with no slack, for certified robustness.

Every part before the head has Lipschitz constant exactly 1:

* ``nn.PixelUnshuffle(2)`` — ``C×H×W → 4C×H/2×W/2``, a permutation of the pixels (norm-preserving
  downsampling; an average pool would cost a factor ``1/2`` of the bound per stage);
* a lift to ``channels[s]``: zero padding of the channels (``lift='pad'``, an isometry) or a convolution
  normalised to operator norm exactly 1 (``lift='conv'``, :class:`~stablenets.nn.SpectralConv2d` with
  ``exact=True``);
* ``blocks[s]`` convolutional gradient-flow blocks ``x ↦ x − h Aᵀσ(Ax + b)`` (eq. 18-19) with ``‖A‖`` held at
  1 and ``h = T`` just below ``2/‖A‖²``: one sub-step each, the Convex Potential Layer of Meunier et al.;
* downsampling between stages: ``PixelUnshuffle(2)`` or the L2-norm pooling :class:`~stablenets.nn.isometries.L2Pool2d`;
* a dense lift normalised to norm exactly 1 to ``dense`` features (optionally followed by MaxMin, 1-Lipschitz)
  and ``dense_blocks`` dense gradient-flow blocks.

The head is linear: ``head='rows'`` normalises each class row to unit norm (the logit differences then have
Lipschitz constants ``‖w_i − w_j‖ ≤ 2``), ``head='spectral'`` normalises the whole matrix to norm 1 (the whole
net 1-Lipschitz).  Either way :meth:`pairwise_lipschitz` gives the constant ``K_ij = L_body ‖w_i − w_j‖`` of
each logit difference, for the per-pair certificate ``min_{j≠y} (z_y − z_j)/K_yj`` (``certificate=pairwise``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_count, check_positive
from ..nn.activations import GroupSort
from ..nn.bounds import lipschitz_bound
from ..nn.gradient_flow import GradientFlowBlock, NonExpansiveBlock
from ..nn.isometries import ChannelPad, L2Pool2d
from ..nn.norms import CERT_SLACK, dense_norm_bound
from ..nn.spectral import SpectralConv2d, SpectralLinear

LIFTS = ("pad", "conv")
DOWNSAMPLE = ("unshuffle", "l2pool")
HEADS = ("rows", "spectral")


class RowNormalizedLinear(nn.Module):
    """``x ↦ Ŵx + b`` with each row of ``Ŵ`` the corresponding row of ``W`` scaled to unit norm."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        lin = nn.Linear(in_features, out_features)
        self.weight, self.bias = lin.weight, lin.bias

    def effective_weight(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """``‖Ŵ‖₂`` of the normalised weight the forward pass applies (certified, :mod:`~stablenets.nn.norms`)."""
        return float(dense_norm_bound(self.effective_weight()))

    @torch.no_grad()
    def plain(self) -> nn.Linear:
        """``nn.Linear`` holding the normalised weight."""
        w = self.effective_weight()
        lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        lin.weight.copy_(w)
        lin.bias.copy_(self.bias)
        return lin.requires_grad_(False)


class CertifiedConvNet(nn.Module):
    """A convolutional classifier whose body is 1-Lipschitz by construction, for certified robustness.

    Stages of pixel-unshuffle or L2-pool downsampling, norm-preserving lifts and convolutional gradient-flow
    blocks ``x ↦ x − h Aᵀσ(Ax + b)`` (eq. 18-19) with ``‖A‖ ≤ 1`` and one sub-step each (convex potential
    layers), then a dense lift with dense gradient-flow blocks and a linear head (see the module docstring).
    :meth:`lipschitz_bound` is the body's certified bound times the head's; :meth:`pairwise_lipschitz` gives
    the constant of each logit difference for the per-pair certificate.

    Args:
        in_shape: the input's shape ``(C, H, W)`` (no batch axis), from the data module.
        out_dim: the number of classes (logits), from the data module.
        channels: the width of each stage; the input of stage ``s`` is lifted to ``channels[s]`` channels.
        blocks: the number of convolutional gradient-flow blocks of each stage (one entry per stage, ``0``
            allowed).
        hidden_mult: the blocks' ``A`` maps ``channels[s]`` to ``hidden_mult · channels[s]`` channels, unless
            ``hidden`` is given.
        lift: how a stage reaches ``channels[s]``: ``"pad"`` (default) appends zero channels (an isometry),
            ``"conv"`` uses a convolution normalised to operator norm exactly 1.  A stage that must reduce
            the channels always uses the convolution; one already at ``channels[s]`` has no lift.
        downsample: between stages: ``"unshuffle"`` (default, ``PixelUnshuffle(2)``: ``C×H×W → 4C×H/2×W/2``,
            a permutation) or ``"l2pool"`` (L2-norm pooling over 2×2 windows, the channels kept).
        stem_unshuffle: apply ``PixelUnshuffle(2)`` to the input before the first stage (default ``True``).
        dense: the width of the dense lift after flattening, normalised to norm exactly 1; ``0`` or ``None``:
            no dense part, the flattened features go straight to the head.
        dense_blocks: the number of dense gradient-flow blocks (width ``dense``, ``‖A‖`` capped at 1) after
            the dense lift.
        dense_activation: ``"groupsort"`` (default) puts MaxMin after the dense lift, ``"none"`` nothing.
        head: ``"rows"`` (default) normalises each class row of the head to unit norm (logit differences
            ``‖w_i − w_j‖ ≤ 2``-Lipschitz), ``"spectral"`` the whole matrix to norm 1 (the whole net
            1-Lipschitz).
        T: the flow time of every block; with ``‖A‖ ≤ 1`` each block takes a single sub-step ``h = T``
            (eq. 19), which needs ``T ≤ 2/(1 + margin)`` (checked).
        margin: the relative safety margin of the training step-size rule (eq. 19).
        activation: the blocks' ``σ``, a non-decreasing activation of :mod:`stablenets.nn.activations`
            (``"relu"`` by default).
        orthogonal_dense: keep the dense lift semi-orthogonal (a Björck retraction after every optimizer
            step) rather than only normalised to norm 1 (default ``True``).
        hidden: the width of ``A`` per stage (one entry per stage); ``None``: ``hidden_mult · channels[s]``.
        L: a prescribed Lipschitz bound (``lipschitz.L``): needs ``head="spectral"``, the output is scaled by
            ``L`` so the net is ``L``-Lipschitz; ``None``: the output is not scaled.
        stage_activation: ``"groupsort"`` puts MaxMin on the channels after each stage's blocks, ``"none"``
            (default) nothing.
        project_channels: a 1×1 convolution with orthonormal rows down to this many channels before
            flattening (fewer features, no norm lost); ``None``: none.
        maxmin_pairs: the channel pairs of every MaxMin: ``"adjacent"`` (default, ``(2i, 2i+1)``) or
            ``"halves"`` (``(i, i + C/2)``, as deel-torchlip).

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        channels=(16, 32),
        blocks=(2, 2),
        hidden_mult: int = 1,
        lift: str = "pad",
        downsample: str = "unshuffle",
        stem_unshuffle: bool = True,
        dense: int = 64,
        dense_blocks: int = 1,
        dense_activation: str = "groupsort",
        head: str = "rows",
        T: float = 1.98,
        margin: float = 0.01,
        activation: str = "relu",
        orthogonal_dense: bool = True,
        hidden: list[int] | None = None,
        L: float | None = None,
        stage_activation: str = "none",
        project_channels: int | None = None,
        maxmin_pairs: str = "adjacent",
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"CertifiedConvNet needs image inputs (C, H, W), got shape {tuple(in_shape)}")
        channels, blocks = list(channels), list(blocks)
        if hidden is not None and len(hidden) != len(channels):
            raise ValueError(f"hidden needs one entry per stage (or null: hidden_mult x channels), got {list(hidden)}")
        if not channels or len(blocks) != len(channels):
            raise ValueError(f"channels and blocks need one entry per stage, got {channels} and {blocks}")
        check_count(
            hidden_mult=hidden_mult,
            dense=dense if dense else None,
            **{f"channels[{i}]": c for i, c in enumerate(channels)},
        )
        check_count(0, dense_blocks=dense_blocks, **{f"blocks[{i}]": b for i, b in enumerate(blocks)})
        check_positive(T=T)
        for name, value, allowed in (
            ("lift", lift, LIFTS),
            ("downsample", downsample, DOWNSAMPLE),
            ("head", head, HEADS),
            ("dense_activation", dense_activation, ("groupsort", "none")),
            ("stage_activation", stage_activation, ("groupsort", "none")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        check_positive(L=L)
        if L is not None and head != "spectral":
            raise ValueError(
                "a prescribed Lipschitz bound L needs head=spectral (the whole net is then 1-Lipschitz, "
                "its output scaled by L); the rows head's norm is not 1"
            )
        if T * (1 + margin) > 2:
            raise ValueError(f"T must be < 2/(1 + margin) for one sub-step per block at norm 1, got {T}")
        self.in_shape = tuple(int(s) for s in in_shape)
        shape = self.in_shape
        parts: list[nn.Module] = []
        if stem_unshuffle:
            parts.append(nn.PixelUnshuffle(2))
            shape = (shape[0] * 4, shape[1] // 2, shape[2] // 2)
        for s, (c, n) in enumerate(zip(channels, blocks)):
            if s > 0:
                if downsample == "unshuffle":
                    parts.append(nn.PixelUnshuffle(2))
                    shape = (shape[0] * 4, shape[1] // 2, shape[2] // 2)
                else:
                    parts.append(L2Pool2d(2))
                    shape = (shape[0], shape[1] // 2, shape[2] // 2)
            if c != shape[0]:
                if lift == "pad" and c > shape[0]:
                    parts.append(ChannelPad(shape[0], c))
                else:
                    parts.append(SpectralConv2d(shape, c, max_norm=1.0, exact=True))
                shape = (c, *shape[1:])
            width_s = hidden[s] if hidden else c * hidden_mult
            parts += [
                GradientFlowBlock(SpectralConv2d(shape, width_s, max_norm=1.0), T, activation, margin) for _ in range(n)
            ]
            if stage_activation == "groupsort":
                parts.append(GroupSort(2, maxmin_pairs))
        if project_channels:  # a 1x1 convolution with orthonormal rows: fewer features to flatten, no norm lost
            parts.append(
                SpectralConv2d(shape, project_channels, kernel_size=1, max_norm=1.0, exact=True, orthogonal=True)
            )
            shape = (project_channels, *shape[1:])
        parts.append(nn.Flatten())
        width = math.prod(shape)
        if dense:
            parts.append(SpectralLinear(width, dense, max_norm=1.0, exact=True, orthogonal=orthogonal_dense))
            if dense_activation == "groupsort":
                parts.append(GroupSort(2, maxmin_pairs))
            parts += [NonExpansiveBlock(dense, dense, T, activation, margin, max_norm=1.0) for _ in range(dense_blocks)]
            width = dense
        self.body = nn.Sequential(*parts)
        self.head = (
            RowNormalizedLinear(width, out_dim)
            if head == "rows"
            else SpectralLinear(width, out_dim, max_norm=1.0, exact=True)
        )
        self.L = L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        return out if self.L is None else self.L * out

    def body_bound(self) -> float:
        return lipschitz_bound(self.body, self.in_shape, "body")

    def lipschitz_bound(self) -> float:
        bound = self.body_bound() * lipschitz_bound(self.head, (self.head.weight.shape[1],), "head")
        return bound if self.L is None else bound * self.L

    @torch.no_grad()
    def pairwise_lipschitz(self) -> torch.Tensor:
        """``K_ij = L_body ‖w_i − w_j‖`` (float64, ``C×C``): the Lipschitz constant of ``z_i − z_j``."""
        was = self.head.training
        self.head.eval()
        w = self.head.effective_weight().double()
        self.head.train(was)
        K = self.body_bound() * (w[:, None] - w[None]).norm(dim=-1) * (1 + CERT_SLACK)
        return K if self.L is None else K * self.L
