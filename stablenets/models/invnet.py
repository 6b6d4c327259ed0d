r"""InvNet (Section 6.1): a Lipschitz-bounded reconstruction network for the 2-D inverse problem.

.. math::  \mathrm{InvNet}_L(y) = c \cdot \mathrm{project} \circ \Phi_\ell \circ \dots \circ \Phi_1
           \circ \mathrm{lift}(y)

``lift`` pads with zeros (2 → ``width``), ``project`` keeps the first coordinates, ``Φ_i`` are
non-expansive blocks (eq. 18-19) and ``c`` is learnable, initialised to 1 and clamped to ``[−L, L]``:
the map is ``L``-Lipschitz (lift and project have norm 1).

Cost: a forward pass takes ``Σ_i n_i`` Euler sub-steps, ``n_i = ⌈T ‖A_i‖² (1+margin)/2⌉`` (eq. 19), and
training inflates ``‖A_i‖`` (Adam moves every entry by up to ``lr`` per step, and the loss keeps rewarding a
longer effective integration time ``T‖A_i‖²``).  ``max_norm = c`` caps the operator norm each block applies
(``A·min(1, c/‖A‖)``: still a gradient flow of a convex potential, eq. 18, and the same step rule), which
bounds the sum by ``depth · ⌈T c² (1+margin)/2⌉`` (:func:`~stablenets.nn.gradient_flow.substep_cap`) in
training and evaluation alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_count, check_positive
from ..nn.gradient_flow import NonExpansiveBlock
from ..nn.norms import round_down


class InvNet(nn.Module):
    """InvNet_L (Section 6.1): an ``L``-Lipschitz reconstruction network, ``c · project ∘ Φ_ℓ ∘ … ∘ Φ_1 ∘ lift``.

    ``lift`` pads the flattened input with zeros to ``width``, the ``Φ_i`` are non-expansive gradient-flow
    blocks (eq. 18-19), ``project`` keeps the first ``out_dim`` coordinates and ``c`` is learnable,
    initialised to 1 and clamped to ``[−L, L]`` (see the module docstring).

    Args:
        in_shape: the input's shape (no batch axis), from the data module.
        out_dim: the output dimension, from the data module.
        L: the prescribed Lipschitz bound, required (``lipschitz.L``, or a multiple of the Tikhonov
            baseline's with ``lipschitz.relative_to=tikhonov``).
        depth: the number of gradient-flow blocks ``ℓ``.
        width: the dimension the blocks work in; at least the input's and the output's dimensions.
        hidden: the rows of each block's ``A``; ``None``: ``width``.
        T: the flow time of each block; it takes ``n = ⌈T k (1 + margin) ‖A‖² / 2⌉`` Euler sub-steps of
            ``h = T/n`` (eq. 19, ``k`` the activation's Lipschitz constant).
        activation: the blocks' ``σ``, a non-decreasing activation of :mod:`stablenets.nn.activations`
            (``"relu"`` by default).
        margin: the relative safety margin of the training step-size rule (eq. 19).
        max_norm: a cap ``c`` on each block's ``‖A‖`` (``A·min(1, c/‖A‖)``): the guarantee is unchanged and
            a forward pass takes at most ``depth · ⌈T k c² (1 + margin)/2⌉`` sub-steps; ``None``: uncapped.

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        L: float,
        depth: int = 5,
        width: int = 10,
        hidden: int | None = None,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        max_norm: float | None = None,
    ) -> None:
        super().__init__()
        in_dim = math.prod(in_shape)
        check_count(depth=depth, width=width, hidden=hidden)
        check_positive(T=T, L=L, max_norm=max_norm)
        if width < max(in_dim, out_dim):
            raise ValueError(f"width must be >= input and output dimensions ({in_dim}, {out_dim}), got {width}")
        self.in_dim, self.out_dim, self.width, self.L = in_dim, out_dim, width, float(L)
        self.layers = nn.ModuleList(
            NonExpansiveBlock(width, hidden or width, T, activation, margin, max_norm) for _ in range(depth)
        )
        self.c = nn.Parameter(torch.ones(()))

    def scale(self) -> torch.Tensor:
        # the limit rounded down to c's dtype: float32's nearest value to L may lie above L
        limit = float(round_down(torch.tensor(self.L, dtype=torch.float64), self.c.dtype))
        return self.c.clamp(-limit, limit)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = F.pad(y.flatten(1), (0, self.width - self.in_dim))  # lift: zero padding
        for layer in self.layers:
            z = layer(z)
        return self.scale() * z[:, : self.out_dim]  # project: first coordinates

    def lipschitz_bound(self) -> float:
        """``|c| · Π 1`` (every block is 1-Lipschitz in eval mode, by its certified sub-step count)."""
        return float(self.scale().detach().abs()) * math.prod(float(b.lipschitz_bound()) for b in self.layers)
