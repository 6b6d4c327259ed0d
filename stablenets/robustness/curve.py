"""A robustness curve for one trained classifier: ε, PGD accuracy, AutoAttack accuracy, certified accuracy."""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from .certify import certified_accuracy
from .pgd import pgd_l2


def collect(loader, n: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
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


def autoattack_l2(net, x, y, eps: list[float], version: str = "standard", batch_size: int = 500, seed: int = 0) -> list[float]:
    """AutoAttack (L2) through torchattacks, one ε at a time; ε = 0 is the clean accuracy."""
    import torchattacks

    accs = []
    for e in eps:
        if e == 0:
            with torch.no_grad():
                accs.append(float((net(x).argmax(1) == y).float().mean()))
            continue
        atk = torchattacks.AutoAttack(net, norm="L2", eps=e, version=version, n_classes=int(net(x[:1]).shape[1]), seed=seed)
        correct = 0
        for i in range(0, len(x), batch_size):
            xa = atk(x[i:i + batch_size], y[i:i + batch_size])
            with torch.no_grad():
                correct += int((net(xa).argmax(1) == y[i:i + batch_size]).sum())
        accs.append(correct / len(x))
    return accs


def robustness_curve(net: torch.nn.Module, loader, attack: dict[str, Any], convention: str = "sqrt2") -> dict[str, Any]:
    """Evaluate ``net`` (eval mode) on up to ``attack['n_eval']`` test points at every ε of ``attack['eps']``."""
    net.eval()
    device = next(net.parameters()).device
    x, y = collect(loader, attack.get("n_eval"), device)
    eps = [float(e) for e in attack["eps"]]
    clip = tuple(attack["clip"]) if attack.get("clip") is not None else None
    bound = float(net.lipschitz_bound()) if hasattr(net, "lipschitz_bound") else math.inf
    t0 = time.perf_counter()
    pgd_acc = [0.0] * len(eps)
    broken_parts = []
    bs = int(attack.get("batch_size") or len(x))
    for i in range(0, len(x), bs):
        res = pgd_l2(net, x[i:i + bs], y[i:i + bs], eps, n_iter=attack["n_iter"], step_factor=attack.get("step_factor", 2.5),
                     step_size=attack.get("step_size"), clip=clip, loss=attack.get("loss", "ce"),
                     random_start=attack.get("random_start", False), restarts=attack.get("restarts", 1),
                     early_stop=attack.get("early_stop", True), monotone=attack.get("monotone", True))
        broken_parts.append(res.broken)
    broken = torch.cat(broken_parts, 1)
    pgd_acc = (1.0 - broken.float().mean(1)).tolist()
    pgd_seconds = time.perf_counter() - t0
    with torch.no_grad():
        logits = torch.cat([net(x[i:i + bs]) for i in range(0, len(x), bs)])
    cert = certified_accuracy(logits, y, bound, eps, convention) if math.isfinite(bound) else [None] * len(eps)
    aa = None
    if attack.get("autoattack"):
        aa = autoattack_l2(net, x, y, eps, version=attack.get("autoattack_version", "standard"))
    rows = []
    for i, e in enumerate(eps):
        rows.append({"eps": e, "pgd_acc": pgd_acc[i], "autoattack_acc": None if aa is None else aa[i],
                     "certified_acc": cert[i]})
    return {"curve": rows, "n_eval": len(x), "lipschitz_bound": bound, "certificate": convention,
            "attack": attack.get("name", "pgd_l2"), "pgd_seconds": pgd_seconds}
