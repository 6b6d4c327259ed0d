"""The 1-Lipschitz layer families compared as "1-Lipschitz Layers Compared" (Prach et al., CVPR 2024) compares
them: the benchmark ConvNet with each family, every run on the same wall-clock budget.

    python experiments/layers_compared.py                                   # Fashion-MNIST, 8 families, XS, 10 min each
    python experiments/layers_compared.py --sizes XS,S --budget 00:00:20:00
    python experiments/layers_compared.py --data cifar10 data.data_dir=/data/cifar
    # = stablenets-train -m experiment=layers_compared_fmnist model/layer=cpl,sll,... model.size=XS
    #       trainer.max_time=00:00:10:00 trainer.max_epochs=1000 num_threads=1      (runs one after another)

    python experiments/layers_compared.py task.optimizer.lr=0.05,0.5         # a learning-rate grid, best by validation
    python experiments/layers_compared.py --from-search outputs/sweeps/layers_compared_fmnist_search   # searched lr, wd

    python experiments/layers_compared.py --search --trials 16 --layers cpl,sll --sizes XS --budget 00:00:02:00
    # = per (layer, size): stablenets-train -m hydra/sweeper=optuna hydra/sweeper/sampler=random
    #       hydra.sweeper.n_trials=16 task.optimizer.lr='tag(log, interval(...))' ...weight_decay=...

Comparison mode: one multirun over layer × size, sequential (runs on a budget must not share the cores with
each other).  Each run trains ``floor(budget / first epoch time)`` epochs with its one-cycle schedule stretched
to them (:class:`stablenets.callbacks.EpochBudget`), then is certified and attacked (PGD) at the preset's radii
with the certificate audit.  Writes into outputs/sweeps/layers_compared_<data>/: ``comparison.csv`` and
``comparison.md`` (per layer and size: clean, certified and PGD accuracy at each ε, seconds per epoch and its
ratio to CPL of the same size, epochs reached, peak memory, parameters, the certified bound, audit violations)
and ``certified_vs_time.png`` (certified accuracy at ε* against seconds per epoch, one point per layer and size).
Runs of one family and size that differ in their training settings (a grid given as overrides, e.g.
``task.optimizer.lr=0.05,0.5``) are all in ``comparison_all.csv``; ``comparison.csv`` keeps, per family and size,
the one with the best validation certified accuracy (``val/certified_acc``: selected on validation, never on test).
``--from-search`` trains each family and size with the learning rate and weight decay its search selected.

Search mode (``--search``): the comparison's hyper-parameter search — random search over the learning rate
(log-uniform, the one-cycle peak) and the weight decay (log-uniform), each trial a run on the budget, selected by
certified accuracy on the validation split at ε* (``val/certified_acc``) — through Hydra's Optuna sweeper,
one study per layer and size.  Writes ``search_best.csv`` (best lr, weight decay and validation certified
accuracy per layer and size) into outputs/sweeps/layers_compared_<data>_search/ (each study's trials in
outputs/sweeps/layers_compared_<data>_search_<layer>_<size>/, with Optuna's optimization_results.yaml).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from stablenets.collect import read_sweep  # noqa: E402
from stablenets.plotting import save_figure  # noqa: E402
from stablenets.runner.sweeps import launch_sweep, study_group  # noqa: E402

LAYERS = ["cpl", "sll", "aol", "soc", "cayley", "lot", "bcop", "sandwich"]
PRESETS = {"fmnist": ("layers_compared_fmnist", 0.25), "cifar10": ("layers_compared_cifar10", 0.1412)}
LAYER_KEY, SIZE_KEY = "model/layer", "model.size"
LR_KEY, WD_KEY = "task.optimizer.lr", "task.optimizer.weight_decay"
# random-search ranges (log-uniform): the one-cycle peak learning rate and the weight decay
LR_RANGE, WD_RANGE = (1e-3, 1.0), (1e-6, 1e-2)


def comparison_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per layer and size: accuracies at each ε, costs, and the checks."""
    runs = runs.copy()
    for key, default in ((LAYER_KEY, "cpl"), (SIZE_KEY, "XS")):
        if key not in runs:
            runs[key] = default
    rows = []
    for _, r in runs.iterrows():
        row = {"layer": r[LAYER_KEY], "size": r[SIZE_KEY], "status": r.get("status")}
        for col, key in (("lr", LR_KEY), ("weight decay", WD_KEY)):
            if key in runs:  # swept or given: which training setting this row is
                row[col] = pd.to_numeric(r.get(key), errors="coerce")
        mine = curves[curves.run_dir == r.run_dir] if not curves.empty else curves
        for _, point in mine.sort_values("eps").iterrows():
            e = f"{point.eps:g}"
            if point.eps == 0:
                row["clean"] = point.pgd_acc
            else:
                row[f"certified@{e}"] = point.certified_acc
                row[f"pgd@{e}"] = point.pgd_acc
        for col, key in (
            ("s/epoch", "budget/seconds_per_epoch"),
            ("epochs", "budget/epochs_reached"),
            ("peak MB", "memory/peak_mb"),
            ("train MB", "memory/train_mb"),
            ("params", "model/parameters"),
            ("L bound", "test/lipschitz_bound"),
            ("audit violations", "test/certificate_violations"),
            ("val certified", "val/certified_acc"),
        ):
            row[col] = r.get(key)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    cpl = (
        table[table.layer == "cpl"].groupby("size")["s/epoch"].mean()
        if "s/epoch" in table  # mean over CPL's runs
        else pd.Series(dtype=float)
    )
    table.insert(
        table.columns.get_loc("s/epoch") + 1,
        "time vs CPL",
        [
            r["s/epoch"] / cpl[r["size"]] if r["size"] in cpl and cpl[r["size"]] else math.nan
            for _, r in table.iterrows()
        ],
    )
    order = {name: i for i, name in enumerate(LAYERS)}
    sizes = {s: i for i, s in enumerate(["XS", "S", "M", "L"])}
    return table.sort_values(
        by=["size", "layer"], key=lambda c: c.map(sizes if c.name == "size" else order)
    ).reset_index(drop=True)


def select_best(table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer and size: of the runs of one family and size that differ in their training settings
    (e.g. ``task.optimizer.lr=0.05,0.5``), the one with the highest validation certified accuracy — the
    comparison's selection rule, never the test numbers.  ``runs`` says how many it was chosen from."""
    if table.empty:
        return table
    table = table.copy()
    table["runs"] = table.groupby(["layer", "size"])["layer"].transform("size")
    score = pd.to_numeric(table.get("val certified"), errors="coerce").fillna(-1.0)
    score = score.where(table.status == "finished", -2.0)  # a finished run beats a failed one
    best = score.groupby([table.layer, table["size"]]).transform("max")
    chosen = table[score == best].drop_duplicates(["layer", "size"])
    return chosen.reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers: accuracies and ratios to 3 places, the rest as they are)."""

    def cell(v) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            if abs(v) >= 100 or v == int(v):
                return f"{v:.0f}"
            return f"{v:.3g}" if abs(v) < 0.01 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, eps: float, out: Path, title: str) -> None:
    col = f"certified@{eps:g}"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = dict(zip(["XS", "S", "M", "L"], "os^D"))
    colours = plt.get_cmap("tab10")
    for i, layer in enumerate(LAYERS):
        mine = table[(table.layer == layer)] if col in table else table.iloc[0:0]
        for _, r in mine.iterrows():
            if pd.notna(r.get(col)) and pd.notna(r.get("s/epoch")):
                ax.scatter(
                    r["s/epoch"],
                    r[col],
                    color=colours(i),
                    marker=markers.get(r["size"], "o"),
                    label=f"{layer} {r['size']}",
                )
                ax.annotate(
                    f"{layer} {r['size']}",
                    (r["s/epoch"], r[col]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("seconds per epoch (training + validation)")
    ax.set_ylabel(f"certified accuracy at ε = {eps:g}")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_figure(fig, out)


def searched_settings(path: Path, layers: list[str], sizes: list[str]) -> list[tuple[str, str, float, float]]:
    """``(layer, size, lr, weight decay)`` of a search's ``search_best.csv`` (a file, or the dir holding it), for
    the requested layers and sizes; a requested pair the search did not finish is an error, before any run."""
    path = path / "search_best.csv" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"layers_compared: no search results at {path} (run with --search first)")
    best = pd.read_csv(path)
    found = {
        (r.layer, r.size): (float(r.lr), float(r.weight_decay))
        for r in best.itertuples()
        if r.status == "finished" and pd.notna(r.lr) and pd.notna(r.weight_decay)
    }
    missing = [f"{layer} {size}" for layer in layers for size in sizes if (layer, size) not in found]
    if missing:
        raise SystemExit(f"layers_compared: {path} has no finished search for {', '.join(missing)}")
    return [(layer, size, *found[(layer, size)]) for layer in layers for size in sizes]


def compare(args, layers: list[str], sizes: list[str]) -> int:
    preset, eps_star = PRESETS[args.data]
    group = args.group or f"layers_compared_{args.data}"
    common = [
        f"experiment={preset}",
        f"trainer.max_time={args.budget}",
        f"trainer.max_epochs={args.max_epochs}",
        "num_threads=1",
    ]
    if args.from_search:  # each family and size with its own searched lr and weight decay, into one study
        for layer, size, lr, wd in searched_settings(Path(args.from_search), layers, sizes):
            sweep = launch_sweep(
                [*common, f"{LAYER_KEY}={layer}", f"{SIZE_KEY}={size}", f"{LR_KEY}={lr:.6g}", f"{WD_KEY}={wd:.6g}"],
                args.overrides,
                group,
            )
    else:
        sweep = launch_sweep(
            [*common, f"{LAYER_KEY}={','.join(layers)}", f"{SIZE_KEY}={','.join(sizes)}"], args.overrides, group
        )
    runs, curves = read_sweep(sweep)
    if runs.empty:
        return 1
    every = comparison_table(runs, curves)
    every.to_csv(sweep / "comparison_all.csv", index=False)
    table = select_best(every)
    table.to_csv(sweep / "comparison.csv", index=False)
    (sweep / "comparison.md").write_text(markdown(table))
    print(markdown(table))
    if not table.empty:
        figure(
            table,
            args.figure_eps or eps_star,
            sweep / "certified_vs_time.png",
            f"{preset}: every run on a budget of {args.budget}",
        )
    print(
        f"wrote {sweep}/comparison.csv, comparison.md (one row per layer and size: the best by validation "
        f"certified accuracy of {len(every)} runs, all in comparison_all.csv), certified_vs_time.png"
    )
    return 0 if (runs.status == "finished").all() else 1


def search(args, layers: list[str], sizes: list[str]) -> int:
    preset, _ = PRESETS[args.data]
    base = args.group or f"layers_compared_{args.data}_search"
    best, failed = [], False
    for layer in layers:
        for size in sizes:
            sweep = launch_sweep(
                [
                    f"experiment={preset}",
                    f"{LAYER_KEY}={layer}",
                    f"{SIZE_KEY}={size}",
                    f"trainer.max_time={args.budget}",
                    f"trainer.max_epochs={args.max_epochs}",
                    "num_threads=1",
                    "hydra/sweeper=optuna",
                    "hydra/sweeper/sampler=random",
                    f"hydra.sweeper.sampler.seed={args.seed}",
                    "hydra.sweeper.direction=maximize",
                    f"hydra.sweeper.study_name={layer}_{size}",
                    f"hydra.sweeper.n_trials={args.trials}",
                    "hydra.sweeper.n_jobs=1",
                    f"task.optimizer.lr=tag(log,interval({LR_RANGE[0]},{LR_RANGE[1]}))",
                    f"task.optimizer.weight_decay=tag(log,interval({WD_RANGE[0]},{WD_RANGE[1]}))",
                ],
                args.overrides,
                f"{base}_{layer}_{size}",
            )
            found = sweep / "optimization_results.yaml"
            if not found.exists():
                failed = True
                best.append({"layer": layer, "size": size, "status": "no result"})
                continue
            res = yaml.safe_load(found.read_text())
            runs, _ = read_sweep(sweep)
            best.append(
                {
                    "layer": layer,
                    "size": size,
                    "status": "finished",
                    "lr": res["best_params"].get("task.optimizer.lr"),
                    "weight_decay": res["best_params"].get("task.optimizer.weight_decay"),
                    "val certified": res["best_value"],
                    "trials": len(runs),
                    "trials finished": int((runs.status == "finished").sum()) if not runs.empty else 0,
                }
            )
    table = pd.DataFrame(best)
    root = Path("outputs/sweeps") / study_group(base, args.overrides)
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "search_best.csv", index=False)
    print(markdown(table))
    print(f"wrote {root}/search_best.csv")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(PRESETS), default="fmnist")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--sizes", default="XS")
    parser.add_argument("--budget", default="00:00:10:00", help="wall-clock budget per run, DD:HH:MM:SS")
    parser.add_argument("--max-epochs", type=int, default=1000, help="cap on the epochs a budget may buy")
    parser.add_argument("--figure-eps", type=float, default=None, help="ε of the figure (default: the preset's ε*)")
    parser.add_argument("--search", action="store_true", help="random search over lr and weight decay instead")
    parser.add_argument(
        "--from-search",
        metavar="PATH",
        default=None,
        help="train each family and size with the lr and weight decay of a search's search_best.csv",
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="the random search's seed")
    parser.add_argument("--group", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    layers, sizes = args.layers.split(","), args.sizes.split(",")
    unknown = [x for x in layers if x not in LAYERS] + [s for s in sizes if s not in ("XS", "S", "M", "L")]
    if unknown:
        parser.error(f"unknown layer families or sizes: {unknown} (layers: {LAYERS}; sizes: XS, S, M, L)")
    if args.trials < 1 or args.max_epochs < 1:
        parser.error("--trials and --max-epochs must be >= 1")
    if args.search and args.from_search:
        parser.error("--search and --from-search exclude each other (search first, then compare from its results)")
    sys.exit(search(args, layers, sizes) if args.search else compare(args, layers, sizes))


if __name__ == "__main__":
    main()
