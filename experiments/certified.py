"""Certified robustness on Fashion-MNIST: the 1-Lipschitz CertifiedConvNet against a deel-torchlip network.

    python experiments/certified.py                                  # the fmnist_certified preset + the sweep
    python experiments/certified.py --values 0.1,0.25,0.5,1.0        # other target radii
    # = stablenets-train -m experiment=fmnist_certified task.loss.target_radius=<values> hydra/launcher=local \
    #       num_threads=1

One multirun: the preset (30,000 train / 1,000 test images, 30 epochs, per-pair certificates, PGD-100 on the
uncertified points) at several target radii ε* of its offset cross-entropy, ``u = √2·ε*``.  For the 1-Lipschitz
net a larger target radius is the same as a smaller Lipschitz bound ``L`` (the logits of an ``L``-Lipschitz net
meet the offset only where its radius exceeds ``u/(√2 L)``): the sweep is the accuracy–robustness trade-off.

Writes into outputs/sweeps/certified/: certified_tradeoff.png (left: clean, certified and PGD accuracy vs ε,
one colour per target radius, the peer in black; right: certified accuracy at fixed ε and clean accuracy vs the
target radius), certified_table.csv (one row per run and the peer's row) and prints the table.

The peer (deel-torchlip 1.0.5, its Fashion-MNIST tutorial network: SpectralConv2d 1→16, 16→32 with GroupSort2
and L2-norm pooling, SpectralLinear 1568→64, GroupSort2, 106k parameters, HKR α = 0.99, margin 0.25, Adam 1e-3,
batch 100, same protocol), certified with m(x)/(√2 L), as measured on 2 CPU cores; see the module's PEER.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stablenets.collect import read_sweep  # noqa: E402
from stablenets.plotting import save_figure  # noqa: E402
from stablenets.runner.sweeps import launch_sweep  # noqa: E402

EPS = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
PEER = {
    "run": "deel-torchlip (HKR)",
    "certified": [0.884, 0.807, 0.641, 0.450, 0.301, 0.224],
    "pgd": [0.884, 0.863, 0.827, 0.734, 0.653, 0.554],
}
KEY = "task.loss.target_radius"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="certified")
    parser.add_argument("--values", default="0.25,0.5,1.0,2.0", help=f"target radii ({KEY}) to sweep")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sweep = launch_sweep(
        ["experiment=fmnist_certified", f"{KEY}={args.values}", "hydra/launcher=local", "num_threads=1"],
        args.overrides,
        args.group,
    )
    runs, curves = read_sweep(sweep)
    if runs.empty or curves.empty:
        sys.exit(1)
    curves[KEY] = pd.to_numeric(curves[KEY])
    table = curves.pivot_table(index=KEY, columns="eps", values="certified_acc")
    pgd = curves.pivot_table(index=KEY, columns="eps", values="pgd_acc")
    rows = [
        {
            "run": f"target radius {r}",
            **{f"certified@{e:g}": table.loc[r, e] for e in table.columns},
            **{f"pgd@{e:g}": pgd.loc[r, e] for e in pgd.columns},
        }
        for r in table.index
    ]
    rows.append(
        {
            "run": PEER["run"],
            **{f"certified@{e:g}": c for e, c in zip(EPS, PEER["certified"])},
            **{f"pgd@{e:g}": p for e, p in zip(EPS, PEER["pgd"])},
        }
    )
    out = pd.DataFrame(rows)
    out.to_csv(sweep / "certified_table.csv", index=False)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.get_cmap("viridis")
    for i, (r, g) in enumerate(curves.sort_values("eps").groupby(KEY)):
        c = colours(i / max(1, curves[KEY].nunique() - 1))
        ax.plot(g.eps, g.certified_acc, "o-", color=c, label=f"ε* = {r:g}: certified")
        ax.plot(g.eps, g.pgd_acc, "--", color=c, alpha=0.6, label=f"ε* = {r:g}: PGD-100")
    ax.plot(EPS, PEER["certified"], "ks-", label=f"{PEER['run']}: certified")
    ax.plot(EPS, PEER["pgd"], "k:", label=f"{PEER['run']}: PGD-100")
    ax.set_xlabel("ε (L2, pixels in [0, 1])")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    for e in (0.0, 0.25, 0.5, 1.0):
        bx.plot(table.index, table[e], "o-", label="clean" if e == 0 else f"certified at ε = {e:g}")
    bx.set_xscale("log")
    bx.set_xticks(list(table.index), [f"{r:g}" for r in table.index])
    bx.minorticks_off()
    bx.set_xlabel("target radius ε* of the loss (≈ 1/L)")
    bx.set_ylabel("accuracy")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    fig.suptitle("Certified robustness on Fashion-MNIST (per-pair certificates)")
    save_figure(fig, sweep / "certified_tradeoff.png")
    print(f"wrote {sweep}/certified_tradeoff.png, certified_table.csv")
    sys.exit(0 if (runs.status == "finished").all() else 1)


if __name__ == "__main__":
    main()
