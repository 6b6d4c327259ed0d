r"""L2 projected gradient ascent (Section 6.2), batched over a whole list of ε.

Each of ``n_iter`` iterations takes a step of size ``α = step_factor · ε / n_iter`` along the normalised
gradient of the attack loss and projects on the ε-ball (and the ``[0, 1]`` box):

.. math::  \delta \leftarrow \Pi_{\|\delta\|\le\varepsilon}\Big(\delta
           + \alpha \frac{\nabla_\delta F(\delta)}{\|\nabla_\delta F(\delta)\|_2}\Big)

The (ε, image) pairs are stacked into one batch, so an iteration is one forward/backward for all ε.
Levers that only ever make the attack *stronger or equal*, never weaker:

* only images the model classifies correctly are attacked (others count as broken at every ε);
* ``early_stop``: an (ε, image) pair leaves the batch as soon as an iterate is misclassified;
* ``monotone``: an image broken at ε is broken at every larger ε (the same perturbation fits the
  larger ball), so those pairs leave the batch too;
* ``robust``: pairs with a certificate (radius > ε, Example 2) are not attacked — no attack can break them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def attack_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss to *maximise*: cross-entropy or the logit margin ``max_{j≠y} z_j − z_y``."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if kind == "margin":
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return other - true
    raise ValueError(f"attack loss must be 'ce' or 'margin', got {kind!r}")


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Logits of ``x``, ``chunk_size`` images per forward (``None``: all at once)."""
    size = chunk_size or len(x)
    return torch.cat([model(x[i : i + size]) for i in range(0, len(x), size)])


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())


def device_generator(generator: torch.Generator | None, device: torch.device | str) -> torch.Generator | None:
    """A generator on ``device`` (random draws must be made where the tensors live), seeded from ``generator``."""
    device = torch.device(device)
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit L2 norm (the PGD step direction)."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1))


def _project(delta: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    delta = delta * (eps / norms).clamp(max=1.0).view(-1, *[1] * (delta.dim() - 1))
    if clip is not None:  # clamping towards x only shrinks |δ_i|: the ball constraint still holds
        delta = (x + delta).clamp(*clip) - x
    return delta


@contextmanager
def channels_last_model(model: torch.nn.Module, x: torch.Tensor, enabled: bool = True):
    """Images on a CPU: model and inputs in ``channels_last`` (where oneDNN's convolutions run fastest); the
    model's layout is restored afterwards."""
    if not enabled or x.dim() != 4 or x.device.type != "cpu":
        yield x
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield x.contiguous(memory_format=torch.channels_last)
    finally:
        model.to(memory_format=torch.contiguous_format)


@dataclass
class PGDResult:
    eps: list[float]
    accuracy: list[float]  # robust accuracy per ε
    broken: torch.Tensor  # (E, N) bool: an adversarial example was found
    delta: torch.Tensor | None  # (E, N, ...) the perturbations (when kept)
    forward_passes: int  # forward/backward evaluations of single images (work measure)


@torch.enable_grad()  # callers may hold no_grad: the attack needs input gradients
def pgd_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    n_iter: int = 100,
    step_factor: float = 2.5,
    step_size: float | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    loss: str = "ce",
    random_start: bool = False,
    restarts: int = 1,
    early_stop: bool = True,
    monotone: bool = True,
    keep_delta: bool = False,
    generator: torch.Generator | None = None,
    robust: torch.Tensor | None = None,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PGDResult:
    """Attack ``model`` (in eval mode) at every ε in ``eps`` at once; see the module docstring.

    ``robust``: an ``(len(eps), N)`` mask of pairs *proven* robust (certified radius > ε); they are never
    attacked — no attack can succeed there — and count as not broken.  ``chunk_size``: at most this many
    (ε, image) rows per forward/backward (``None``: all at once); on a CPU a few hundred rows keep the
    activations in cache (docs/design-notes.md).  ``progress(done, total)`` is
    called after each chunk with the (ε, image) pairs attacked so far.
    """
    if n_iter < 1 or restarts < 1:
        raise ValueError(f"n_iter and restarts must be >= 1, got {n_iter}, {restarts}")
    if any(e < 0 for e in eps):
        raise ValueError(f"every ε must be >= 0, got {eps}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    if clip is not None and (x.min() < clip[0] or x.max() > clip[1]):
        # clamping an input that lies outside the box would move it by more than ε
        raise ValueError(f"inputs lie outside the box {tuple(clip)}; use clip=None for such data")
    was_training = model.training
    model.eval()
    with channels_last_model(model, x) as x:
        order = sorted(range(len(eps)), key=lambda i: eps[i])
        eps_sorted = torch.tensor([eps[i] for i in order], dtype=x.dtype, device=x.device)
        E, N = len(eps), len(x)
        clean_wrong = predict(model, x, chunk_size).argmax(1) != y
        broken = clean_wrong.expand(E, N).clone()
        skip = torch.zeros_like(broken) if robust is None else robust.to(broken.device)[torch.tensor(order)].clone()
        skip &= ~broken  # a misclassified point is never "robust"
        best_delta = torch.zeros(E, *x.shape, dtype=x.dtype, device=x.device) if keep_delta else None
        run = _Run(
            model,
            x,
            y,
            eps_sorted,
            broken,
            best_delta,
            n_iter,
            step_factor,
            step_size,
            clip,
            loss,
            early_stop,
            monotone,
            generator,
        )
        run.passes = N
        done, total = 0, None
        for _ in range(restarts):
            # (ε, image) pairs still to attack, image-major so that one image's ε share a chunk where possible
            n_idx, e_idx = (~broken & ~skip & (eps_sorted[:, None] > 0)).t().nonzero(as_tuple=True)
            if len(e_idx) == 0:
                break
            total = total or len(e_idx) * restarts
            size = chunk_size or len(e_idx)
            for i in range(0, len(e_idx), size):
                e_c, n_c = e_idx[i : i + size], n_idx[i : i + size]
                if monotone:  # pairs broken through a smaller ball while earlier chunks ran
                    fresh = ~broken[e_c, n_c]
                    e_c, n_c = e_c[fresh], n_c[fresh]
                if len(e_c):
                    run.attack(e_c, n_c, random_start)
                done += min(size, len(e_idx) - i)
                if progress is not None:
                    progress(done, total)
        inverse = torch.empty(E, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(E)
        broken = broken[inverse.to(broken.device)]
        acc = (1.0 - broken.float().mean(1)).tolist()
        delta_out = best_delta[inverse.to(x.device)].contiguous() if best_delta is not None else None
        result = PGDResult(list(eps), acc, broken, delta_out, run.passes)
    model.train(was_training)
    return result


class _Run:
    """The state shared by the chunks of one :func:`pgd_l2` call."""

    def __init__(
        self,
        model,
        x,
        y,
        eps,
        broken,
        best_delta,
        n_iter,
        step_factor,
        step_size,
        clip,
        loss,
        early_stop,
        monotone,
        generator,
    ) -> None:
        self.model, self.x, self.y, self.eps, self.broken, self.best_delta = model, x, y, eps, broken, best_delta
        self.n_iter, self.step_factor, self.step_size, self.clip, self.loss = n_iter, step_factor, step_size, clip, loss
        self.early_stop, self.monotone = early_stop, monotone
        self.generator = device_generator(generator, x.device)
        self.passes = 0

    def attack(self, e_idx: torch.Tensor, n_idx: torch.Tensor, random_start: bool) -> None:
        x, n_iter, clip = self.x, self.n_iter, self.clip
        view = (-1, *[1] * (x.dim() - 1))
        xb, yb, eb = x[n_idx], self.y[n_idx], self.eps[e_idx]
        alpha = eb * self.step_factor / n_iter if self.step_size is None else torch.full_like(eb, self.step_size)
        delta = torch.zeros_like(xb)
        if random_start:
            noise = torch.randn(xb.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            radius = torch.rand(len(xb), generator=self.generator, device=x.device, dtype=x.dtype) * eb
            delta = _project(_unit(noise) * radius.view(view), xb, eb, clip)
        live = torch.arange(len(xb), device=x.device)  # rows of (xb, ...) still attacked
        for it in range(n_iter + 1):  # the last pass only checks the final iterate
            full = len(live) == len(xb)  # no gather/scatter while every row is live
            d = (delta if full else delta[live]).detach().requires_grad_(True)
            y_live = yb if full else yb[live]
            logits = self.model((xb if full else xb[live]) + d)
            self.passes += len(live)
            wrong = logits.argmax(1) != y_live
            if wrong.any():  # any misclassified iterate is an adversarial example inside the ball
                _record(self.broken, self.best_delta, e_idx[live[wrong]], n_idx[live[wrong]], d[wrong], self.monotone)
            if it == n_iter:
                break
            keep = ~wrong if self.early_stop else torch.ones_like(wrong)
            if self.early_stop and self.monotone:  # the image is broken at this ε through a smaller ball
                keep &= ~self.broken[e_idx[live], n_idx[live]]
            if not keep.any():
                break
            (grad,) = torch.autograd.grad(attack_loss(logits, y_live, self.loss).sum(), d)
            with torch.no_grad():
                step = d.detach() + alpha[live].view(view) * _unit(grad)
                new = _project(step, xb[live], eb[live], clip)
                if keep.all():
                    if full:
                        delta = new
                    else:
                        delta[live] = new
                else:
                    delta[live[keep]] = new[keep]
                    live = live[keep]


def _record(broken, best_delta, e_rows, n_rows, deltas, monotone: bool) -> None:
    """Mark (ε, image) pairs broken; with ``monotone`` also every larger ε of those images."""
    hit = torch.zeros_like(broken)
    hit[e_rows, n_rows] = True
    if best_delta is not None:
        best_delta[e_rows, n_rows] = deltas.detach()
    if monotone:  # ε are sorted ascending: propagate along the ε axis
        spread = hit.cummax(0).values & ~broken & ~hit
        if best_delta is not None and spread.any():
            first = hit.float().argmax(0)  # smallest ε index that broke each image now
            e_new, n_new = spread.nonzero(as_tuple=True)
            best_delta[e_new, n_new] = best_delta[first[n_new], n_new]
        hit |= spread
    broken |= hit


@torch.enable_grad()
def pgd_l2_per_eps(
    model,
    x,
    y,
    eps: list[float],
    n_iter: int = 100,
    step_factor: float = 2.5,
    clip=(0.0, 1.0),
    loss: str = "ce",
    chunk_size: int | None = None,
    layout: bool = False,
) -> list[float]:
    """The plain evaluation: one ε at a time, every image, every iteration, accuracy of the final iterate
    (``chunk_size`` images per forward, ``None``: all at once; ``layout``: :func:`channels_last_model`)."""
    model.eval()
    with channels_last_model(model, x, layout) as x:
        return _per_eps(model, x, y, eps, n_iter, step_factor, clip, loss, chunk_size or len(x))


def _per_eps(model, x, y, eps, n_iter, step_factor, clip, loss, size) -> list[float]:
    accs = []
    for e in eps:
        correct = 0
        for i in range(0, len(x), size):
            xc, yc = x[i : i + size], y[i : i + size]
            delta = torch.zeros_like(xc)
            et = torch.full((len(xc),), e, dtype=x.dtype, device=x.device)
            for _ in range(n_iter if e > 0 else 0):
                d = delta.requires_grad_(True)
                (grad,) = torch.autograd.grad(attack_loss(model(xc + d), yc, loss).sum(), d)
                with torch.no_grad():
                    delta = _project(d + (e * step_factor / n_iter) * _unit(grad), xc, et, clip)
            correct += int((predict(model, xc + delta).argmax(1) == yc).sum())
        accs.append(correct / len(x))
    return accs
