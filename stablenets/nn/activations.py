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
        if self.group == 2:  # MaxMin: a min and a max are cheaper than a sort
            a, b = g.unbind(2)
            return torch.stack([torch.minimum(a, b), torch.maximum(a, b)], 2).flatten(1, 2)
        return g.sort(dim=2).values.flatten(1, 2)

    def lipschitz_bound(self) -> float:
        return 1.0
