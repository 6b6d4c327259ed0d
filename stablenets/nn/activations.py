"""Activations usable inside gradient-flow blocks, with their Lipschitz constants.

A non-expansive block ``x - h Aᵀσ(Ax + b)`` is the explicit Euler step of ``-∇V`` with
``V(x) = 1ᵀγ(Ax + b)``, ``γ' = σ``.  ``V`` is convex iff σ is non-decreasing, and ``∇V`` is
``k‖A‖²``-Lipschitz when σ is ``k``-Lipschitz, so the step-size rule (eq. 19) becomes
``h ≤ 2 / (k‖A‖²)`` (Exercise 15).
"""

from __future__ import annotations

from collections.abc import Callable

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


PAIRINGS = ("adjacent", "halves")


def _pair_views(t: torch.Tensor, halves: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two members of every channel pair of ``t``, as views: channels ``(2i, 2i+1)`` (``adjacent``) or
    ``(i, i + C/2)`` (``halves``)."""
    return t.chunk(2, 1) if halves else t.unflatten(1, (-1, 2)).unbind(2)


def _join(first: torch.Tensor, second: torch.Tensor, halves: bool) -> torch.Tensor:
    return torch.cat([first, second], 1) if halves else torch.stack([first, second], 2).flatten(1, 2)


class _MaxMin(torch.autograd.Function):
    """MaxMin on channel pairs: ``(min, max)`` of each pair, in its place.  A permutation of the input in every
    linear region — the swap of the pairs with ``a > b`` — applied as one: the forward writes ``min`` and
    ``max`` into a tensor of the input's memory layout and keeps the swap mask ``s`` (as 0/1 floats); the
    backward and the forward-mode ``jvp`` apply the same swap (it is its own transpose) as
    ``(a(1−s) + b·s, a·s + b(1−s))`` — products by exact zeros and ones, so the gradient is a permutation of
    the output gradient bit for bit, at a fraction of the cost of ``torch.where`` (not vectorised on the CPU)
    and of autograd's masks, fills and sums for ``minimum`` and ``maximum`` (docs/design-notes.md).  At ties
    (``a = b``) the permutation is the identity, so gradient norms are preserved everywhere."""

    @staticmethod
    def _swap(s: torch.Tensor, t: torch.Tensor, halves: bool) -> torch.Tensor:
        """``t`` with each pair ``(a, b)`` swapped where ``s = 1``, laid out as ``t``."""
        a, b = _pair_views(t, halves)
        keep = 1 - s
        if torch.is_grad_enabled() and t.requires_grad:  # double backward: the differentiable form
            return _join(a * keep + b * s, a * s + b * keep, halves)
        out = torch.empty_like(t)
        first, second = _pair_views(out, halves)
        torch.mul(a, keep, out=first).addcmul_(b, s)
        torch.mul(a, s, out=second).addcmul_(b, keep)
        return out

    @staticmethod
    def forward(x: torch.Tensor, halves: bool) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = _pair_views(x, halves)
        out = torch.empty_like(x)
        first, second = _pair_views(out, halves)
        torch.minimum(a, b, out=first)
        torch.maximum(a, b, out=second)
        return out, (a > b).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.swap, ctx.halves = output[1], inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_swap=None) -> tuple[torch.Tensor, None]:
        return _MaxMin._swap(ctx.saved_tensors[0], grad, ctx.halves), None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _halves=None) -> tuple[torch.Tensor, None]:
        return _MaxMin._swap(ctx.swap, tangent, ctx.halves), None


class GroupSort(torch.nn.Module):
    """Sorts the channels (dim 1) in groups of ``group`` (``group=2``: MaxMin): a permutation of the input in
    every linear region, so it is 1-Lipschitz and preserves gradient norms (Anil et al.).

    ``pairs`` (MaxMin only): which channels form a pair — ``adjacent`` ``(2i, 2i+1)`` (the default, as every
    checkpoint before the option was trained) or ``halves`` ``(i, i + C/2)``, as deel-torchlip's GroupSort2.
    The same function class (the surrounding layers learn any channel order)."""

    def __init__(self, group: int = 2, pairs: str = "adjacent") -> None:
        super().__init__()
        if group < 2:
            raise ValueError(f"group must be >= 2, got {group}")
        if pairs not in PAIRINGS:
            raise ValueError(f"pairs must be one of {PAIRINGS}, got {pairs!r}")
        if pairs != "adjacent" and group != 2:
            raise ValueError("pairs applies to MaxMin (group=2) only")
        self.group, self.pairs = group, pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % self.group:
            raise ValueError(f"GroupSort({self.group}) needs a channel count divisible by {self.group}, got {c}")
        if self.group == 2:
            halves = self.pairs == "halves"
            if torch.is_grad_enabled() and x.requires_grad:  # training, attacks: the swap as one function
                return _MaxMin.apply(x, halves)[0]
            a, b = _pair_views(x, halves)  # inference (and export): the same values from a min and a max
            return _join(torch.minimum(a, b), torch.maximum(a, b), halves)
        return x.unflatten(1, (c // self.group, self.group)).sort(dim=2).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group={self.group}" + (f", pairs={self.pairs}" if self.pairs != "adjacent" else "")

    def lipschitz_bound(self) -> float:
        return 1.0
