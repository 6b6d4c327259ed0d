"""The paper's figures, written as PNG files.  Every function takes data, not models' internals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def save_figure(fig, path: Path | str, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_decision_boundary(
    net: torch.nn.Module, x2d: torch.Tensor, y: torch.Tensor, embed, path, title: str = ""
) -> Path:
    """Figure 2/4 (top): predicted class over a grid of the plane, with the data on top."""
    lo, hi = x2d.min(0).values - 0.2, x2d.max(0).values + 0.2
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    param = next(net.parameters())
    pred = net(embed(grid).to(param)).argmax(1).reshape(gx.shape).cpu()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.contourf(gx, gy, pred, levels=[-0.5, 0.5, 1.5], colors=["#9ecae1", "#fcbba1"], alpha=0.8)
    ax.scatter(x2d[:, 0], x2d[:, 1], c=np.where(y.numpy() == 1, "tab:red", "tab:blue"), s=6)
    ax.set_title(title)
    ax.set_aspect("equal")
    return save_figure(fig, path)


def plot_jacobian_norms(history: Sequence[tuple[int, list[float]]], path, title: str = "", ax=None) -> Path | None:
    """Figure 2/4 (bottom): ‖∂x_{ℓ+1}/∂x_j‖₂ over training iterations, one line per layer j."""
    steps = [s for s, _ in history]
    norms = np.array([n for _, n in history])
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    cmap = plt.get_cmap("viridis")
    for j in range(norms.shape[1]):
        ax.semilogy(steps, norms[:, j], color=cmap(j / max(1, norms.shape[1] - 1)), label=f"j={j + 1}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"$\|\partial x_{\ell+1}/\partial x_j\|_2$")
    ax.set_title(title)
    if norms.shape[1] <= 12:
        ax.legend(fontsize=6, ncol=2)
    return save_figure(ax.figure, path) if own else None


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    marker: str = "o",
) -> Path:
    """Generic line plot: ``{label: (x, y)}``."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker=marker, ms=3, label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_point_sets(panels: dict[str, dict[str, np.ndarray]], path, title: str = "") -> Path:
    """Side-by-side scatter panels: ``{panel title: {label: (n, 2) array}}`` (Figures 1, 6, 9, 11)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, sets) in zip(axes[0], panels.items()):
        for label, pts in sets.items():
            ax.scatter(pts[:, 0], pts[:, 1], s=5, label=label, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)
