r"""Certified robustness from Lipschitz bounds (Example 2).

If ``Φ`` is ``L``-Lipschitz and ``m(x) = Φ_k̂(x) − max_{k≠k̂} Φ_k(x)`` is the margin, the prediction cannot
change within ``‖x − y‖ < m(x) / (2L)`` (the paper's argument, ``certificate: paper``); the tighter, standard
``m(x) / (√2 L)`` holds because ``Φ_i − Φ_j`` is ``√2 L``-Lipschitz (``certificate: sqrt2``, default).  A
model that knows the Lipschitz constant ``K_ij`` of each logit difference ``Φ_i − Φ_j`` (a linear head on
an ``L``-Lipschitz body: ``K_ij = L_body ‖w_i − w_j‖``, method ``pairwise_lipschitz()``) certifies
``min_{j≠k̂} (Φ_k̂ − Φ_j)(x) / K_k̂j`` (``certificate: pairwise``), never below the √2 radius.
"""

from __future__ import annotations

import math

import torch

CONVENTIONS = {"sqrt2": math.sqrt(2.0), "paper": 2.0, "pairwise": None}


def margins(logits: torch.Tensor) -> torch.Tensor:
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"certificate convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")


@torch.no_grad()
def certified_radius(logits: torch.Tensor, lipschitz: float | torch.Tensor, convention: str = "sqrt2") -> torch.Tensor:
    """Certified L2 radius of each prediction: ``lipschitz`` is the net's bound ``L`` (float), or with
    ``convention='pairwise'`` the ``(C, C)`` matrix of the logit differences' constants ``K_ij``."""
    check_convention(convention)
    logits = logits.double()
    if convention != "pairwise":
        if not math.isfinite(float(lipschitz)):
            return torch.zeros(len(logits), dtype=torch.float64, device=logits.device)
        return margins(logits) / (CONVENTIONS[convention] * float(lipschitz))
    K = torch.as_tensor(lipschitz, dtype=torch.float64, device=logits.device)
    pred = logits.argmax(1)
    gaps = logits.gather(1, pred[:, None]) - logits  # z_ŷ − z_j ≥ 0
    ratio = gaps / K[pred].clamp_min(1e-300)
    ratio.scatter_(1, pred[:, None], float("inf"))  # j = ŷ is not a competitor
    return ratio.amin(1)


@torch.no_grad()
def certified_mask(
    logits: torch.Tensor, y: torch.Tensor, lipschitz, eps: list[float], convention: str = "sqrt2"
) -> torch.Tensor:
    """``(len(eps), N)``: correctly classified with certified radius above ε (the bound is strict; ε = 0: correct)."""
    radius = certified_radius(logits, lipschitz, convention)
    correct = logits.argmax(1) == y
    return torch.stack([correct & (radius > e) if e > 0 else correct for e in eps])


def certified_accuracy(
    logits: torch.Tensor, y: torch.Tensor, lipschitz, eps: list[float], convention: str = "sqrt2"
) -> list[float]:
    """Fraction of points correctly classified whose certified radius exceeds ε."""
    return certified_mask(logits, y, lipschitz, eps, convention).float().mean(1).tolist()
