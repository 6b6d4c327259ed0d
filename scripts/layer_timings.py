"""Time one training step (forward + backward) and one eval forward of every layer family, relative to CPL,
and report each layer's certified bound and parameter count.

    python scripts/layer_timings.py [--shape 16 16 16] [--batch 64] [--rounds 5] [--threads 1]
    python scripts/layer_timings.py --net XS --batch 256 --rounds 3      # the comparison's whole net, per family
    python scripts/layer_timings.py --net XS --batch 256 --memory        # its peak memory per family (Linux)

``--net SIZE``: instead of one layer, the benchmark ConvNet of ``experiment=layers_compared_fmnist`` (size XS, S,
M or L) built with each family, on Fashion-MNIST-shaped input (1×28×28), trained with the preset's SGD: its
train step is an epoch's cost per batch, so the ratios to CPL are the families' seconds-per-epoch ratios
measured in one process.  The eval time is one eval-mode forward right after a training step, so it includes
what each family recomputes when its weights have changed (certified norms, orthogonal maps), as a
validation's first batch does.

All families are timed in one process, round-robin (each round times every family once), so that load on
the machine affects them alike; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from stablenets.nn.layers import FAMILIES


def _time(fn, repeats: int = 3) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def whole_net(family: str, size: str) -> torch.nn.Module:
    """The benchmark ConvNet of ``experiment=layers_compared_fmnist`` with ``family``'s layers, as a run builds it."""
    from stablenets.api import compose
    from stablenets.runner.config import build

    cfg = compose(["experiment=layers_compared_fmnist", f"model/layer={family}", f"model.size={size}"])
    return build("model", cfg.model, in_shape=(1, 28, 28), out_dim=10)


def _rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory(family: str, size: str, batch: int) -> float:
    """MiB a training step of the whole net adds at its peak, in this (fresh) process: peak resident set during
    the step minus the resident set before it (the net, the batch and the interpreter excluded)."""
    net, x = whole_net(family, size), torch.randn(batch, 1, 28, 28)
    net.eval()
    with torch.no_grad():
        net(x[:2])  # one-time work (certified norms, caches) before the baseline
    net.train()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark
    before = _rss_mb("VmRSS")
    net(x).square().mean().backward()
    return _rss_mb("VmHWM") - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[16, 16, 16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--net",
        choices=["XS", "S", "M", "L"],
        default=None,
        help="time the comparison's whole net of this size instead of one layer",
    )
    ap.add_argument(
        "--memory",
        action="store_true",
        help="with --net: peak memory of a training step, each family in a fresh process (Linux)",
    )
    ap.add_argument("--one-family", default=None, help=argparse.SUPPRESS)  # --memory's child process
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_family:
        print(f"{peak_memory(args.one_family, args.net, args.batch):.1f}")
        return
    if args.memory:
        if not args.net:
            ap.error("--memory needs --net SIZE")
        print(f"LipConvNet {args.net}, batch {args.batch}: MiB a training step adds at its peak (fresh process each)")
        for f in FAMILIES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--net",
                    args.net,
                    "--batch",
                    str(args.batch),
                    "--threads",
                    str(args.threads),
                    "--one-family",
                    f,
                ],
                capture_output=True,
                text=True,
            )
            print(
                f"{f:10s} "
                + (out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "failed: " + out.stderr[-200:])
            )
        return
    torch.manual_seed(0)
    if args.net:
        shape, layers = (1, 28, 28), {f: whole_net(f, args.net) for f in FAMILIES}
    else:
        shape = tuple(args.shape)
        layers = {f: conv(shape) for f, (_, conv) in FAMILIES.items() if conv is not None}
    x = torch.randn(args.batch, *shape)
    train, evals = {f: [] for f in layers}, {f: [] for f in layers}
    optimizers = {f: torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9) for f, layer in layers.items()}

    def step(family):
        layers[family].zero_grad()
        layers[family](x).square().mean().backward()
        optimizers[family].step()

    for r in range(args.rounds + 1):  # round 0 warms up (first certified norms, allocator): not timed
        for f, layer in layers.items():
            layer.train()
            t = _time(lambda f=f: step(f), repeats=1 if args.net else 3)
            layer.eval()
            with torch.no_grad():
                e = _time(lambda layer=layer: layer(x), repeats=1 if args.net else 3)
            if r:
                train[f].append(t)
                evals[f].append(e)
    ref_t, ref_e = statistics.median(train["cpl"]), statistics.median(evals["cpl"])
    what = f"LipConvNet {args.net}" if args.net else "one layer"
    print(f"{what}, input {shape}, batch {args.batch}, {args.threads} thread(s), median of {args.rounds} rounds")
    print(f"{'family':10s} {'train ms':>9s} {'x CPL':>6s} {'eval ms':>8s} {'x CPL':>6s} {'params':>7s}  bound")
    for f, layer in layers.items():
        t, e = statistics.median(train[f]), statistics.median(evals[f])
        n = sum(p.numel() for p in layer.parameters())
        print(
            f"{f:10s} {1e3 * t:9.2f} {t / ref_t:6.2f} {1e3 * e:8.2f} {e / ref_e:6.2f} {n:7d}  "
            f"{layer.lipschitz_bound():.9f}"
        )


if __name__ == "__main__":
    main()
