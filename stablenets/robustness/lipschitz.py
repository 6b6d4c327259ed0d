"""Empirical Lipschitz constants by search: a *lower* bound of the true constant, to test claimed upper bounds.

``max ‖f(x) − f(y)‖ / ‖x − y‖`` over (i) random pairs around the data, (ii) the largest Jacobian norms
found by power iteration on ``JᵀJ`` (vector-Jacobian products), and (iii) gradient ascent on the ratio
from the best starting pairs, over both close pairs (local slope) and distant ones.
"""
from __future__ import annotations

from typing import Callable

import torch

from .pgd import device_generator


def _ratio(f, x, y) -> torch.Tensor:
    num = (f(x) - f(y)).flatten(1).norm(dim=1)
    den = (x - y).flatten(1).norm(dim=1).clamp_min(1e-12)
    return num / den


def jacobian_norm_search(f: Callable, x: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """Per-sample estimate of ``‖∂f(x)‖₂`` by power iteration with jvp/vjp (lower bounds)."""
    v = torch.randn(x.shape, dtype=x.dtype, device=x.device)
    v = v / v.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    sigma = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    for _ in range(iters):
        _, jv = torch.func.jvp(f, (x,), (v,))
        _, vjp_fn = torch.func.vjp(f, x)
        (jtjv,) = vjp_fn(jv)
        norms = jtjv.flatten(1).norm(dim=1).clamp_min(1e-30)
        v = jtjv / norms.view(-1, *[1] * (x.dim() - 1))
        sigma = norms.sqrt()
    return sigma


def empirical_lipschitz(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_pairs: int = 512,
                        ascent_steps: int = 100, lr: float = 0.01, scales: tuple[float, ...] = (1e-3, 0.1, 1.0),
                        generator: torch.Generator | None = None) -> float:
    """Largest ratio found for ``f`` around the points ``x`` (shape (N, ...)); see the module docstring."""
    generator = device_generator(generator, x.device)
    idx = torch.randint(0, len(x), (n_pairs,), generator=generator, device=x.device)
    base = x[idx].detach()
    best = torch.tensor(0.0, dtype=x.dtype, device=x.device)
    starts = []
    with torch.no_grad():
        for s in scales:
            d = torch.randn(base.shape, generator=generator, dtype=x.dtype, device=x.device) * s
            a = base + torch.randn(base.shape, generator=generator, dtype=x.dtype, device=x.device) * s
            r = _ratio(f, a, a + d)
            best = torch.maximum(best, r.max())
            top = r.topk(min(16, len(r))).indices
            starts.append((a[top], d[top]))
    with torch.enable_grad():
        best = torch.maximum(best, jacobian_norm_search(f, base[: min(64, len(base))]).max().detach())
        for a0, d0 in starts:
            a = a0.clone().requires_grad_(True)
            d = d0.clone().requires_grad_(True)
            opt = torch.optim.Adam([a, d], lr=lr)
            for _ in range(ascent_steps):
                r = _ratio(f, a, a + d)
                best = torch.maximum(best, r.max().detach())
                opt.zero_grad()
                (-r.sum()).backward()
                opt.step()
            with torch.no_grad():
                best = torch.maximum(best, _ratio(f, a, a + d).max())
    return float(best)
