"""Empirical Lipschitz constants by search: a *lower* bound of the true constant, to test claimed upper bounds.

``max ‖f(x) − f(y)‖ / ‖x − y‖`` over (i) random pairs around the data, (ii) the largest Jacobian norms
found by power iteration on ``JᵀJ`` (vector-Jacobian products), and (iii) gradient ascent on the ratio
from the best starting pairs, over both close pairs (local slope) and distant ones.

The cost is fixed and known before the search starts: :func:`search_passes` calls of ``f`` — one batched
call for the random pairs of all scales, a forward-mode and a reverse-mode call per Jacobian iteration,
one call per ascent step (both points of every pair in one batch, then one backward pass) and a final
call — whatever ``f`` is.  For a gradient-flow network each call costs its sub-step count, so the
search costs ``search_passes(...)`` × the sub-steps per forward (and the backward passes of the ascent).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .pgd import device_generator


def search_passes(n_scales: int = 3, jacobian_iters: int = 10, ascent_steps: int = 100) -> int:
    """Number of calls of ``f`` that :func:`empirical_lipschitz` makes (see the module docstring)."""
    return 1 + 2 * jacobian_iters + ascent_steps + 1


def _ratio_pairs(f, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖f(a) − f(b)‖ / ‖a − b‖`` per pair, from one call of ``f`` on both points."""
    out = f(torch.cat([a, b]))
    fa, fb = out[: len(a)], out[len(a) :]
    num = (fa - fb).flatten(1).norm(dim=1)
    den = (a - b).flatten(1).norm(dim=1).clamp_min(1e-12)
    return num / den


def jacobian_norm_search(f: Callable, x: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """Per-sample estimate of ``‖∂f(x)‖₂`` by power iteration with jvp/vjp (lower bounds); ``2·iters`` calls of
    ``f``."""
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


def empirical_lipschitz(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_pairs: int = 512,
    ascent_steps: int = 100,
    lr: float = 0.01,
    scales: tuple[float, ...] = (1e-3, 0.1, 1.0),
    generator: torch.Generator | None = None,
    jacobian_iters: int = 10,
    n_starts: int = 16,
    jacobian_points: int = 64,
) -> float:
    """Largest ratio found for ``f`` around the points ``x`` (shape (N, ...)); see the module docstring.

    ``f`` must act on each sample independently (a batch of pairs is evaluated in one call).  The search
    makes exactly ``search_passes(len(scales), jacobian_iters, ascent_steps)`` calls of ``f``: ``n_pairs``
    random pairs per scale, ``jacobian_iters`` power iterations at up to ``jacobian_points`` data points,
    and ``ascent_steps`` Adam steps on the ratio from the ``n_starts`` best pairs of each scale at once."""
    if n_pairs < 1 or ascent_steps < 0 or jacobian_iters < 0 or n_starts < 1 or not scales:
        raise ValueError(
            f"need n_pairs >= 1, ascent_steps >= 0, jacobian_iters >= 0, n_starts >= 1 and scales; got "
            f"{n_pairs}, {ascent_steps}, {jacobian_iters}, {n_starts}, {scales}"
        )
    generator = device_generator(generator, x.device)
    idx = torch.randint(0, len(x), (n_pairs,), generator=generator, device=x.device)
    base = x[idx].detach()

    def draw(s: float) -> torch.Tensor:
        return torch.randn(base.shape, generator=generator, dtype=x.dtype, device=x.device) * s

    # (i) random pairs of every scale: one call
    a = torch.cat([base + draw(s) for s in scales])
    d = torch.cat([draw(s) for s in scales])
    with torch.no_grad():
        r = _ratio_pairs(f, a, a + d)
    best = r.max()
    k = min(n_starts, n_pairs)
    top = torch.cat([i * n_pairs + r[i * n_pairs : (i + 1) * n_pairs].topk(k).indices for i in range(len(scales))])
    with torch.enable_grad():
        # (ii) Jacobian norms at data points: 2 calls per iteration
        if jacobian_iters:
            best = torch.maximum(best, jacobian_norm_search(f, base[:jacobian_points], jacobian_iters).max().detach())
        # (iii) gradient ascent on the ratio from the best pairs of all scales together: 1 call per step
        a = a[top].clone().requires_grad_(True)
        d = d[top].clone().requires_grad_(True)
        opt = torch.optim.Adam([a, d], lr=lr)
        for _ in range(ascent_steps):
            r = _ratio_pairs(f, a, a + d)
            best = torch.maximum(best, r.max().detach())
            opt.zero_grad()
            (-r.sum()).backward()
            opt.step()
    with torch.no_grad():  # the last step's pairs
        best = torch.maximum(best, _ratio_pairs(f, a, a + d).max())
    return float(best)
