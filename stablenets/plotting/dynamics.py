"""Figures 3 and 5 and the learned-dynamics figure (vector fields, long rollouts)."""

from __future__ import annotations

import numpy as np
import torch

from .figures import plt, save_figure


def plot_fields_and_rollouts(net, datamodule, pred_long, true_long, path, title: str = ""):
    r = datamodule.radius * 1.2
    gx, gy = np.meshgrid(np.linspace(-r, r, 25), np.linspace(-r, r, 25))
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    param = next(net.parameters())
    with torch.enable_grad():
        learned = net(pts.to(param.device)).detach().cpu().numpy()
    true = datamodule.field(pts).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, field, name in ((axes[0], true, "true field"), (axes[1], learned, "learned field")):
        ax.quiver(gx, gy, field[:, 0].reshape(gx.shape), field[:, 1].reshape(gx.shape), angles="xy")
        ax.set_title(name)
        ax.set_aspect("equal")
    ax = axes[2]
    for i in range(min(12, pred_long.shape[1])):
        ax.plot(true_long[:, i, 0], true_long[:, i, 1], color="0.7", lw=1)
        ax.plot(pred_long[:, i, 0].clamp(-3 * r, 3 * r), pred_long[:, i, 1].clamp(-3 * r, 3 * r), lw=1)
    ax.plot(0, 0, "k*", ms=10)
    ax.set_xlim(-1.5 * r, 1.5 * r)
    ax.set_ylim(-1.5 * r, 1.5 * r)
    ax.set_title("long rollouts (grey: true)")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_integrators(x0: float, p0: float, h: float, n: int, path):
    """Figure 3: explicit vs symplectic Euler on the harmonic oscillator, with ``E_0(1+h²)^n``."""
    from ..systems.integrators import energy, euler_energy_closed_form, explicit_euler, symplectic_euler

    e, s = explicit_euler(x0, p0, h, n), symplectic_euler(x0, p0, h, n)
    t = np.arange(n + 1) * h
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(e[:, 0], e[:, 1], label="explicit Euler")
    axes[0].plot(s[:, 0], s[:, 1], label="symplectic Euler")
    th = np.linspace(0, 2 * np.pi, 200)
    r = np.hypot(x0, p0)
    axes[0].plot(r * np.cos(th), r * np.sin(th), "k--", lw=1, label="exact")
    axes[0].set_aspect("equal")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("p")
    axes[0].legend(fontsize=8)
    axes[1].semilogy(t, energy(e), label="explicit Euler")
    axes[1].semilogy(t, euler_energy_closed_form(energy(e)[0], h, n), "k:", label=r"$E_0(1+h^2)^n$")
    axes[1].semilogy(t, energy(s), label="symplectic Euler")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("energy")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Figure 3: harmonic oscillator, x0={x0}, p0={p0}, h={h}")
    return save_figure(fig, path)


def plot_phase_portraits(systems: dict[str, np.ndarray], path):
    """Figure 5: phase portraits of linear systems; line width grows with the speed ‖Ax‖."""
    fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 4))
    gx, gy = np.meshgrid(np.linspace(-2, 2, 60), np.linspace(-2, 2, 60))
    for ax, (name, A) in zip(axes, systems.items()):
        u = A[0, 0] * gx + A[0, 1] * gy
        v = A[1, 0] * gx + A[1, 1] * gy
        speed = np.hypot(u, v)
        ax.streamplot(gx, gy, u, v, linewidth=0.4 + 1.6 * speed / speed.max(), density=1.1, color="tab:blue")
        ax.plot(0, 0, "k*")
        ax.set_title(f"{name}\neigenvalues {np.round(np.linalg.eigvals(A), 2)}", fontsize=9)
        ax.set_aspect("equal")
    return save_figure(fig, path)
