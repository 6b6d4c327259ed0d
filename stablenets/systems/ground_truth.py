"""Ground-truth dynamical systems with a known asymptotically stable equilibrium (Section 5)."""

from __future__ import annotations

import torch


def damped_pendulum(x: torch.Tensor, damping: float = 0.5) -> torch.Tensor:
    """``θ' = ω, ω' = −sin θ − b ω``: the origin is asymptotically stable; every state with energy
    ``ω²/2 + 1 − cos θ < 2`` (below the separatrix) converges to it."""
    theta, omega = x[..., 0], x[..., 1]
    return torch.stack([omega, -torch.sin(theta) - damping * omega], -1)


def exercise11(x: torch.Tensor) -> torch.Tensor:
    """Exercise 11: ``x' = −x + y², y' = −2y + 3x²`` (locally asymptotically stable origin)."""
    a, b = x[..., 0], x[..., 1]
    return torch.stack([-a + b**2, -2 * b + 3 * a**2], -1)


SYSTEMS = {"damped_pendulum": damped_pendulum, "exercise11": exercise11}
