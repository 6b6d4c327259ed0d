r"""Certified robustness from a Lipschitz bound (Example 2).

If ``Φ`` is ``L``-Lipschitz and ``m(x) = Φ_k̂(x) − max_{k≠k̂} Φ_k(x)`` is the margin, the prediction
cannot change within ``‖x − y‖ < m(x) / (2L)`` (the paper's argument); the tighter, standard
``m(x) / (√2 L)`` holds because ``Φ_i − Φ_j`` is ``√2 L``-Lipschitz.  The convention is named in every
result (``certificate: sqrt2`` or ``paper``).
"""
from __future__ import annotations

import math

import torch

CONVENTIONS = {"sqrt2": math.sqrt(2.0), "paper": 2.0}


def margins(logits: torch.Tensor) -> torch.Tensor:
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@torch.no_grad()
def certified_radius(logits: torch.Tensor, lipschitz: float, convention: str = "sqrt2") -> torch.Tensor:
    if convention not in CONVENTIONS:
        raise ValueError(f"certificate convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
    if not math.isfinite(lipschitz):
        return torch.zeros(len(logits), device=logits.device)
    return margins(logits) / (CONVENTIONS[convention] * lipschitz)


@torch.no_grad()
def certified_mask(logits: torch.Tensor, y: torch.Tensor, lipschitz: float, eps: list[float],
                   convention: str = "sqrt2") -> torch.Tensor:
    """``(len(eps), N)``: correctly classified with certified radius above ε (the bound is strict; ε = 0: correct)."""
    radius = certified_radius(logits, lipschitz, convention)
    correct = logits.argmax(1) == y
    return torch.stack([correct & (radius > e) if e > 0 else correct for e in eps])


def certified_accuracy(logits: torch.Tensor, y: torch.Tensor, lipschitz: float, eps: list[float],
                       convention: str = "sqrt2") -> list[float]:
    """Fraction of points correctly classified whose certified radius exceeds ε."""
    return certified_mask(logits, y, lipschitz, eps, convention).float().mean(1).tolist()
