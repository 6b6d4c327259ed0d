"""Time one training step (forward + backward) and one eval forward of every layer family, relative to CPL,
and report each layer's certified bound and parameter count.

    python scripts/layer_timings.py [--shape 16 16 16] [--batch 64] [--rounds 5] [--threads 1]
    python scripts/layer_timings.py --net XS --batch 256 --rounds 3      # the comparison's whole net, per family
    python scripts/layer_timings.py --net XS --batch 256 --memory        # its peak memory per family (Linux)
    python scripts/layer_timings.py --shape 64 16 16 --reference ../1LipschitzLayersCompared --bro-reference ../BRONet

``--reference DIR`` (one layer only): also time the reference implementations on the same shape, side by side in
the same rounds — the comparison's own code from a checkout of berndprach/1LipschitzLayersCompared at ``DIR``
(AOL, BCOP, Cayley, CPL, LOT, SLL, SOC, Sandwich; it needs ``einops``), BRO from a checkout of
ntuaislab/BRONet (``--bro-reference DIR``), AOC from the ``orthogonium`` package itself — and print each family's
train-step time over the reference's.  Both sides are timed as a training step is taken: forward, backward and
the optimizer's step, plus, for the families whose norm estimate the project advances after the step
(``PowerMethodCallback``: CPL, the gradient-flow block), that update (the reference does it in the forward).
Nothing of the reference is copied: its modules are imported from the checkout for the timing only.

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

from stablenets.callbacks import PowerMethodCallback
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


#: family -> the class of the comparison's code (models.layers) with the same function
REFERENCE_CLASSES = {
    "aol": "AOLConv2d",
    "bcop": "BCOP",
    "cayley": "CayleyConv",
    "cpl": "CPLConv2d",
    "lot": "LOT",
    "sll": "SLLConv2d",
    "soc": "SOC",
    "sandwich": "SandwichConv",
}


def reference_layers(shape: tuple[int, int, int], root: str | None, bro_root: str | None) -> dict:
    """The reference implementations of the families on ``shape`` (C→C, 3×3), imported from the checkouts."""
    c, h, _ = shape
    out = {}
    if root:
        sys.path.insert(0, str(Path(root).resolve()))
        import models.layers as ref  # the comparison's package (needs einops)

        out.update({f: getattr(ref, name)(c, c, 3) for f, name in REFERENCE_CLASSES.items()})
        sys.path.pop(0)
    if bro_root:  # BRONet's LipConvNet layer, loaded from its file (its package name clashes with the other's)
        import importlib.util

        spec = importlib.util.spec_from_file_location("bronet_bro", Path(bro_root, "lipconvnet/models/layers/bro.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out["bro"] = module.BRO(c, c, 3, input_size=h, mask_level=0.5)
    from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d

    out["aoc"] = AdaptiveOrthoConv2d(c, c, 3, padding="same", padding_mode="circular")
    return out


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
    ap.add_argument("--reference", default=None, metavar="DIR", help="a checkout of 1LipschitzLayersCompared")
    ap.add_argument("--bro-reference", default=None, metavar="DIR", help="a checkout of BRONet (for BRO)")
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
    refs = {}
    if args.reference or args.bro_reference:
        if args.net:
            ap.error("--reference times single layers: leave out --net")
        refs = {f"{f} (ref)": layer for f, layer in reference_layers(shape, args.reference, args.bro_reference).items()}
    x = torch.randn(args.batch, *shape)
    timed = {**layers, **refs}
    train, evals = {f: [] for f in timed}, {f: [] for f in timed}
    optimizers = {f: torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9) for f, layer in timed.items()}
    power = {f: PowerMethodCallback() for f in layers}  # the per-step update the project does after the step

    def step(name):
        layer = timed[name]
        layer.zero_grad()
        layer(x).square().mean().backward()
        optimizers[name].step()
        if name in power:
            power[name].update(layer)

    for _ in range(2):  # the reference's lazy state (Cayley's alpha, CPL's vector) exists after a first forward
        for name, layer in timed.items():
            layer.train()
            step(name)
    optimizers = {f: torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9) for f, layer in timed.items()}
    for r in range(args.rounds + 1):  # round 0 warms up (first certified norms, allocator): not timed
        for name, layer in timed.items():
            layer.train()
            t = _time(lambda name=name: step(name), repeats=1 if args.net else 3)
            layer.eval()
            with torch.no_grad():
                e = _time(lambda layer=layer: layer(x), repeats=1 if args.net else 3)
            if r:
                train[name].append(t)
                evals[name].append(e)
    ref_t, ref_e = statistics.median(train["cpl"]), statistics.median(evals["cpl"])
    what = f"LipConvNet {args.net}" if args.net else "one layer"
    print(f"{what}, input {shape}, batch {args.batch}, {args.threads} thread(s), median of {args.rounds} rounds")
    head = f"{'family':14s} {'train ms':>9s} {'x CPL':>6s} {'eval ms':>8s} {'x CPL':>6s} {'params':>7s}"
    print(head + ("  train x ref" if refs else "") + "  bound")
    for f, layer in layers.items():
        t, e = statistics.median(train[f]), statistics.median(evals[f])
        n = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        vs = ""
        if refs:
            r = f"{f} (ref)"
            vs = f"  {t / statistics.median(train[r]):11.2f}" if r in train else f"  {'n/a':>11s}"
        print(
            f"{f:14s} {1e3 * t:9.2f} {t / ref_t:6.2f} {1e3 * e:8.2f} {e / ref_e:6.2f} {n:7d}{vs}  "
            f"{layer.lipschitz_bound():.9f}"
        )
    for r in refs:
        t, e = statistics.median(train[r]), statistics.median(evals[r])
        print(f"{r:14s} {1e3 * t:9.2f} {t / ref_t:6.2f} {1e3 * e:8.2f} {e / ref_e:6.2f}")


if __name__ == "__main__":
    main()
