r"""Tikhonov regularisation for ``y = A x + z`` (Section 6.1.1).

.. math::  \hat x_\tau = (A^\top A + \tau I)^{-1} A^\top y  \quad (33), \qquad
           L(\tau) = \max_i \frac{\sigma_i}{\sigma_i^2 + \tau} \quad (34)

``τ*`` is chosen by a logarithmic grid search of the training error (Figure 7); ``L* = L(τ*)``.
:func:`tau_for_lipschitz` inverts (34) to get the reconstruction with any prescribed Lipschitz constant.
"""

from __future__ import annotations

import math

import torch


def reconstruction_matrix(A: torch.Tensor, tau: float) -> torch.Tensor:
    n = A.shape[1]
    return torch.linalg.solve(A.t() @ A + tau * torch.eye(n, dtype=A.dtype), A.t())


def reconstruct(A: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. (33) applied to each row of ``y``."""
    return y @ reconstruction_matrix(A, tau).t()


def lipschitz_of_tau(A: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Eq. (34): operator norm of the reconstruction map."""
    s = torch.linalg.svdvals(A.double())
    tau = torch.as_tensor(tau, dtype=torch.float64)
    return (s[:, None] / (s[:, None] ** 2 + tau.reshape(1, -1))).amax(0).reshape(tau.shape)


def tau_for_lipschitz(A: torch.Tensor, L: float) -> float:
    """The ``τ ≥ 0`` with ``L(τ) = L`` (bisection in ``log τ``; ``L(τ)`` is decreasing).

    ``L(τ) < L(0) = 1/σ_min``: a larger target is out of Tikhonov's reach and gives ``τ = 0``
    (the plain (pseudo-)inverse), whose constant is ``1/σ_min``.
    """
    s = torch.linalg.svdvals(A.double())
    if not L > 0:
        raise ValueError(f"the target Lipschitz constant must be > 0, got {L}")
    if L >= float((1 / s).max()):
        return 0.0
    lo, hi = -30.0, 30.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(lipschitz_of_tau(A, math.exp(mid))) > L:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over samples of the squared error ``‖x̂ − x†‖²`` (the paper's loss)."""
    return float((pred - target).pow(2).sum(1).mean())


def grid_search(A: torch.Tensor, y: torch.Tensor, x: torch.Tensor, taus: torch.Tensor | None = None) -> dict:
    """Figure 7: training error over a log grid of τ; returns the grid, errors, ``τ*`` and ``L*``."""
    taus = torch.logspace(-4, 2, 121, dtype=torch.float64) if taus is None else taus
    A, y, x = A.double(), y.double(), x.double()
    errors = torch.tensor([mse(reconstruct(A, y, float(t)), x) for t in taus])
    best = int(errors.argmin())
    tau_star = float(taus[best])
    return {"taus": taus, "errors": errors, "tau_star": tau_star, "L_star": float(lipschitz_of_tau(A, tau_star))}
