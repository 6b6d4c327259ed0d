"""Time one training step (forward + backward) and one eval forward of every layer family, relative to CPL,
and report each layer's certified bound and parameter count.

    python scripts/layer_timings.py [--shape 16 16 16] [--batch 64] [--rounds 5] [--threads 1]

All families are timed in one process, round-robin (each round times every family once), so that load on
the machine affects them alike; the median over rounds is reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stablenets.nn.layers import FAMILIES


def _time(fn, repeats: int = 3) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[16, 16, 16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(args.shape)
    layers = {f: conv(shape) for f, (_, conv) in FAMILIES.items() if conv is not None}
    x = torch.randn(args.batch, *shape)
    train, evals = {f: [] for f in layers}, {f: [] for f in layers}

    def step(layer):
        layer.zero_grad()
        layer(x).square().mean().backward()

    for _ in range(args.rounds):
        for f, layer in layers.items():
            layer.train()
            train[f].append(_time(lambda: step(layer)))
            layer.eval()
            with torch.no_grad():
                evals[f].append(_time(lambda: layer(x)))
    ref_t, ref_e = statistics.median(train["cpl"]), statistics.median(evals["cpl"])
    print(f"input {shape}, batch {args.batch}, {args.threads} thread(s), median of {args.rounds} rounds")
    print(f"{'family':10s} {'train ms':>9s} {'x CPL':>6s} {'eval ms':>8s} {'x CPL':>6s} {'params':>7s}  bound")
    for f, layer in layers.items():
        t, e = statistics.median(train[f]), statistics.median(evals[f])
        n = sum(p.numel() for p in layer.parameters())
        print(f"{f:10s} {1e3 * t:9.2f} {t / ref_t:6.2f} {1e3 * e:8.2f} {e / ref_e:6.2f} {n:7d}  "
              f"{layer.lipschitz_bound():.9f}")


if __name__ == "__main__":
    main()
