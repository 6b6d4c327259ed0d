r"""Section 2: explicit Euler (eq. 9) vs symplectic Euler (eq. 10) on the harmonic oscillator (Exercise 3).

.. math::  \dot x = p,\ \dot p = -x, \qquad E(x, p) = (x^2 + p^2)/2

Explicit Euler multiplies the energy by exactly ``1 + h²`` per step, ``E_n = E_0 (1 + h²)^n``; the
symplectic Euler step ``x' = x + h p, p' = p − h x'`` is a linear map with determinant 1 whose eigenvalues
lie on the unit circle for ``0 < h < 2``, so the energy stays within fixed bounds.
"""

from __future__ import annotations

import numpy as np


def explicit_euler(x0: float, p0: float, h: float, n: int) -> np.ndarray:
    """``(n+1, 2)`` trajectory of eq. (9) for the oscillator."""
    out = np.empty((n + 1, 2))
    out[0] = x0, p0
    for k in range(n):
        x, p = out[k]
        out[k + 1] = x + h * p, p - h * x
    return out


def symplectic_euler(x0: float, p0: float, h: float, n: int) -> np.ndarray:
    """``(n+1, 2)`` trajectory of eq. (10)."""
    out = np.empty((n + 1, 2))
    out[0] = x0, p0
    for k in range(n):
        x, p = out[k]
        x = x + h * p
        out[k + 1] = x, p - h * x
    return out


def energy(traj: np.ndarray) -> np.ndarray:
    return 0.5 * (traj**2).sum(-1)


def euler_energy_closed_form(e0: float, h: float, n: int) -> np.ndarray:
    """``E_0 (1 + h²)^k`` for ``k = 0..n`` (Exercise 3)."""
    return e0 * (1 + h * h) ** np.arange(n + 1)


def symplectic_energy_bounds(e0: float, h: float) -> tuple[float, float]:
    """Bounds of the energy along a symplectic Euler orbit, ``0 < h < 2``.

    The step conserves the modified energy ``Ẽ = (x² + p² − h x p)/2`` exactly, and
    ``(1 − h/2) E ≤ Ẽ ≤ (1 + h/2) E``, hence ``E_n ∈ [Ẽ/(1 + h/2), Ẽ/(1 − h/2)]``; for ``x_0 = 1, p_0 = 0``,
    ``Ẽ = E_0``.
    """
    if not 0 < h < 2:
        raise ValueError(f"symplectic Euler is stable for 0 < h < 2, got {h}")
    return e0 / (1 + h / 2), e0 / (1 - h / 2)


def linear_systems() -> dict[str, np.ndarray]:
    """Figure 5: asymptotically stable, unstable, stable but not asymptotically stable."""
    return {
        "asymptotically stable": np.array([[-0.5, 1.0], [-1.0, -0.5]]),
        "unstable": np.array([[0.3, 1.0], [-1.0, 0.3]]),
        "stable, not asymptotically": np.array([[0.0, 1.0], [-1.0, 0.0]]),
    }
