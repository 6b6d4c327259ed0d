"""Activations usable inside gradient-flow blocks, with their Lipschitz constants.

A non-expansive block ``x - h Aᵀσ(Ax + b)`` is the explicit Euler step of ``-∇V`` with
``V(x) = 1ᵀγ(Ax + b)``, ``γ' = σ``.  ``V`` is convex iff σ is non-decreasing, and ``∇V`` is
``k‖A‖²``-Lipschitz when σ is ``k``-Lipschitz, so the step-size rule (eq. 19) becomes
``h ≤ 2 / (k‖A‖²)`` (Exercise 15).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

#: name -> (function, Lipschitz constant k, non-decreasing?)
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float, bool]] = {
    "relu": (F.relu, 1.0, True),
    "tanh": (torch.tanh, 1.0, True),
    "sigmoid": (torch.sigmoid, 0.25, True),
    "softplus": (F.softplus, 1.0, True),
    "leaky_relu": (F.leaky_relu, 1.0, True),
    "elu": (F.elu, 1.0, True),
}


def get_activation(name: str, *, monotone: bool = False) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Return ``(σ, k)`` for ``name``; with ``monotone`` only non-decreasing ones are accepted."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    fn, k, nondecreasing = ACTIVATIONS[name]
    if monotone and not nondecreasing:
        raise ValueError(f"activation {name!r} is not non-decreasing, so V would not be convex")
    return fn, k


class _MaxMin(torch.autograd.Function):
    """MaxMin on channel pairs ``(2i, 2i+1)``: ``(min, max)``.  A permutation of the input in every linear region,
    applied as one: the forward writes both halves through a mask ``a > b`` into a tensor of the input's memory
    layout, and the backward (and forward-mode ``jvp``) applies the same permutation to the gradient —
    two selections instead of autograd's masks, fills and sums for ``minimum`` and ``maximum``.  At ties
    (``a = b``) the permutation is the identity, so gradient norms are preserved everywhere."""

    @staticmethod
    def _swap(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t`` with each pair ``(a, b)`` swapped where ``mask``, laid out as ``t`` (a swap is its own inverse
        and transpose: the forward, the backward and the jvp are all this)."""
        a, b = t.unflatten(1, (-1, 2)).unbind(2)
        if torch.is_grad_enabled() and t.requires_grad:  # double backward: the differentiable form
            return torch.stack([torch.where(mask, b, a), torch.where(mask, a, b)], 2).flatten(1, 2)
        out = torch.empty_like(t)
        first, second = out.unflatten(1, (-1, 2)).unbind(2)
        torch.where(mask, b, a, out=first)
        torch.where(mask, a, b, out=second)
        return out

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.unflatten(1, (-1, 2)).unbind(2)
        mask = a > b
        return _MaxMin._swap(mask, x), mask

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.mask = output[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_mask=None) -> torch.Tensor:
        return _MaxMin._swap(ctx.saved_tensors[0], grad)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _tangent_mask=None) -> tuple[torch.Tensor, None]:
        return _MaxMin._swap(ctx.mask, tangent), None


class GroupSort(torch.nn.Module):
    """Sorts the channels (dim 1) in groups of ``group`` (``group=2``: MaxMin): a permutation of the input in
    every linear region, so it is 1-Lipschitz and preserves gradient norms (Anil et al.)."""

    def __init__(self, group: int = 2) -> None:
        super().__init__()
        if group < 2:
            raise ValueError(f"group must be >= 2, got {group}")
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % self.group:
            raise ValueError(f"GroupSort({self.group}) needs a channel count divisible by {self.group}, got {c}")
        g = x.unflatten(1, (c // self.group, self.group))
        if self.group == 2:
            if torch.is_grad_enabled() and x.requires_grad:  # training, attacks: one swap through a mask
                return _MaxMin.apply(x)[0]
            a, b = g.unbind(2)  # inference (and export): the same values from a min and a max
            return torch.stack([torch.minimum(a, b), torch.maximum(a, b)], 2).flatten(1, 2)
        return g.sort(dim=2).values.flatten(1, 2)

    def lipschitz_bound(self) -> float:
        return 1.0
