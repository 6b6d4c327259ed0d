"""A robustness curve for one trained classifier: ε, PGD accuracy, AutoAttack accuracy, certified accuracy."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..contracts import LipschitzBounded, PairwiseBounded
from .certify import certified_mask
from .pgd import accuracy, pgd_l2, predict
from .progress import LoopProgress


def take(loader, n: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, total = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        total += len(y)
        if n and total >= n:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    if n:
        x, y = x[:n], y[:n]
    return x.to(device), y.to(device)


def autoattack_l2(
    net,
    x,
    y,
    eps: list[float],
    version: str = "standard",
    batch_size: int = 500,
    seed: int = 0,
    clip: tuple[float, float] | None = (0.0, 1.0),
    robust: torch.Tensor | None = None,
    progress=None,
) -> list[float]:
    """AutoAttack (L2) through torchattacks, one ε at a time; ε = 0 is the clean accuracy.

    ``robust`` (``(len(eps), N)``, certified pairs) are counted correct without being attacked: no attack
    can break them.
    torchattacks keeps inputs in [0, 1]; for other data (``clip=None``) the inputs are mapped affinely into
    [0, 1] and ε scaled by the same factor, so the attack is on the same ball of the original space."""
    import torchattacks

    model, scale = net, 1.0
    if clip is None:  # x = lo + s·u with u in [0, 1]: attack u with ε/s, an isometry up to the factor s
        lo = float(x.min()) - 1.0
        scale = float(x.max()) + 1.0 - lo
        model = torch.nn.Sequential(_Affine(lo, scale), net)
        x = (x - lo) / scale
    accs = []
    todo_all = [int(len(x) if robust is None else (~robust[k]).sum()) if e > 0 else 0 for k, e in enumerate(eps)]
    done = 0
    for k, e in enumerate(eps):
        if e == 0:
            accs.append(accuracy(model, x, y))
            continue
        atk = torchattacks.AutoAttack(
            model, norm="L2", eps=e / scale, version=version, n_classes=int(model(x[:1]).shape[1]), seed=seed
        )
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device) if robust is None else ~robust[k]
        correct = len(x) - int(todo.sum())
        xt, yt = x[todo], y[todo]
        for i in range(0, len(xt), batch_size):
            xa = atk(xt[i : i + batch_size], yt[i : i + batch_size])
            with torch.no_grad():
                correct += int((model(xa).argmax(1) == yt[i : i + batch_size]).sum())
            done += len(xa)
            if progress is not None:
                progress(done, sum(todo_all))
        accs.append(correct / len(x))
    return accs


class _Affine(torch.nn.Module):
    def __init__(self, lo: float, scale: float) -> None:
        super().__init__()
        self.lo, self.scale = lo, scale

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.lo + self.scale * u


def chunk_for(device: torch.device, chunk_size: int | str | None) -> int | None:
    """``auto``: 256 rows per forward on a CPU (cache-sized), all at once on an accelerator."""
    if chunk_size == "auto":
        return 256 if torch.device(device).type == "cpu" else None
    return None if chunk_size is None else int(chunk_size)


def _lipschitz(net: torch.nn.Module) -> float:
    return float(net.lipschitz_bound()) if isinstance(net, LipschitzBounded) else math.inf


def _certificate_bound(net: torch.nn.Module, convention: str, lipschitz: float):
    """What the certificate needs from the net: its bound ``lipschitz`` or, for ``pairwise``, the matrix ``K``."""
    if convention == "pairwise":
        if not isinstance(net, PairwiseBounded):
            raise ValueError(
                f"certificate=pairwise needs a model with pairwise_lipschitz(); {type(net).__name__} has "
                "none (use certificate=sqrt2)"
            )
        return net.pairwise_lipschitz()
    return lipschitz


def audit_certificates(
    net, x, y, eps: list[float], certified: torch.Tensor, n_pairs: int, seed: int = 0, **pgd_kwargs
) -> dict[str, int]:
    """Attack a random sample of ``n_pairs`` certified (ε > 0, image) pairs with PGD; every success is a
    violation of a certificate (a wrong bound), so the count must be 0."""
    candidates = (certified & (torch.tensor(eps, device=certified.device) > 0)[:, None]).nonzero()
    if n_pairs <= 0 or len(candidates) == 0:
        return {"audited": 0, "violations": 0}
    g = torch.Generator().manual_seed(seed)
    pick = candidates[torch.randperm(len(candidates), generator=g)[:n_pairs].to(candidates.device)]
    audited = torch.zeros_like(certified)
    audited[pick[:, 0], pick[:, 1]] = True
    res = pgd_l2(net, x, y, eps, robust=~audited, generator=g, **pgd_kwargs)
    return {"audited": int(audited.sum()), "violations": int((res.broken & audited).sum())}


def robustness_curve(
    net: torch.nn.Module,
    loader,
    attack: dict[str, Any],
    convention: str = "sqrt2",
    box: tuple[float, float] | None = None,
    progress: str = "none",
) -> dict[str, Any]:
    """Evaluate ``net`` (eval mode, on its own device) on up to ``attack['n_eval']`` test points at every ε.

    ``attack['clip']``: ``"auto"`` keeps attacked inputs in the data's ``box`` (pixels: [0, 1]; none for
    vector data), a pair sets the box, ``None`` disables it.  With a finite Lipschitz bound, pairs whose
    certified radius exceeds ε are not attacked (``skip_certified``): no attack can succeed there — and a
    random sample of ``audit`` of them is attacked anyway (:func:`audit_certificates`), so that a wrong
    bound cannot hide behind the skip."""
    net.eval()
    device = next(net.parameters()).device
    x, y = take(loader, attack.get("n_eval"), device)
    eps = [float(e) for e in attack["eps"]]
    clip = attack.get("clip", "auto")
    clip = box if clip == "auto" else (tuple(clip) if clip is not None else None)
    lipschitz = _lipschitz(net)
    bound = _certificate_bound(net, convention, lipschitz)
    chunk = chunk_for(device, attack.get("chunk_size", "auto"))
    pgd_kwargs = dict(
        n_iter=attack["n_iter"],
        step_factor=attack.get("step_factor", 2.5),
        step_size=attack.get("step_size"),
        clip=clip,
        loss=attack.get("loss", "ce"),
        random_start=attack.get("random_start", False),
        restarts=attack.get("restarts", 1),
        early_stop=attack.get("early_stop", True),
        monotone=attack.get("monotone", True),
        chunk_size=chunk,
    )
    t0 = time.perf_counter()
    logits = predict(net, x, chunk)
    certifies = convention == "pairwise" or math.isfinite(bound)
    certified = certified_mask(logits, y, bound, eps, convention) if certifies else None
    cert = certified.float().mean(1).tolist() if certified is not None else [None] * len(eps)
    # the per-pair certificate is reported beside the sqrt(2) one it improves on
    sqrt2 = (
        certified_mask(logits, y, lipschitz, eps, "sqrt2").float().mean(1).tolist()
        if convention == "pairwise"
        else None
    )
    robust = certified if attack.get("skip_certified", True) else None  # ε = 0 rows are never attacked
    bar = LoopProgress(f"PGD-{attack['n_iter']} curve", progress)
    res = pgd_l2(net, x, y, eps, robust=robust, progress=bar.update, **pgd_kwargs)
    bar.close()
    pgd_seconds = time.perf_counter() - t0
    audit = {"audited": 0, "violations": 0}
    if certified is not None:
        audit = audit_certificates(net, x, y, eps, certified, int(attack.get("audit", 100)), **pgd_kwargs)
    aa, aa_seconds = None, None
    if attack.get("autoattack"):
        t0 = time.perf_counter()
        bar = LoopProgress("AutoAttack", progress)
        aa = autoattack_l2(
            net,
            x,
            y,
            eps,
            version=attack.get("autoattack_version", "standard"),
            clip=clip,
            robust=robust,
            batch_size=int(attack.get("batch_size") or 500),
            progress=bar.update,
        )
        bar.close()
        aa_seconds = time.perf_counter() - t0
    rows = []
    for i, e in enumerate(eps):
        rows.append(
            {
                "eps": e,
                "pgd_acc": res.accuracy[i],
                "autoattack_acc": None if aa is None else aa[i],
                "certified_acc": cert[i],
            }
        )
        if sqrt2 is not None:
            rows[-1]["certified_sqrt2_acc"] = sqrt2[i]
    return {
        "curve": rows,
        "n_eval": len(x),
        "lipschitz_bound": lipschitz,
        "certificate": convention,
        "attack": attack.get("name", "pgd_l2"),
        "pgd_seconds": pgd_seconds,
        "pgd_passes": res.forward_passes,
        "autoattack_seconds": aa_seconds,
        "certificate_audit": audit,
    }
