"""The 1-Lipschitz layer families compared as "1-Lipschitz Layers Compared" (Prach et al., CVPR 2024) compares
them: the benchmark ConvNet with each family, every run on the same wall-clock budget of training.

    python experiments/layers_compared.py --data fmnist_cpu task.optimizer.lr=0.01,0.02 --jobs 2   # the CPU table
    python experiments/layers_compared.py --sizes XS,S --budget 00:00:20:00          # Fashion-MNIST, the full net
    python experiments/layers_compared.py --data cifar10 --sizes XS,S,M,L --budget 00:02:00:00 \
        data.data_dir=/data/cifar hydra/launcher=slurm trainer=gpu hydra.launcher.partition=gpu   # the protocol
    # = stablenets-train -m experiment=layers_compared_<data> model/layer=cpl,sll,... model.size=XS
    #       trainer.max_time=<budget> trainer.max_epochs=1000 num_threads=1 (+ the overrides given)

    python experiments/layers_compared.py --search --trials 16 --layers cpl,sll --budget 00:00:02:00
    python experiments/layers_compared.py --from-search outputs/sweeps/layers_compared_fmnist__budget=...__search

Presets (``--data``): ``fmnist`` and ``cifar10`` are the comparison's protocol (``conf/experiment/
layers_compared_{fmnist,cifar10}.yaml``: sizes XS-L, hours per run on a GPU); ``fmnist_cpu`` is its CPU scale
(``layers_compared_fmnist_cpu.yaml``: a narrower, shallower net and a subset of the images, so that on one thread
every family gets at least 10 epochs of a 6-minute budget, and the whole table of 11 families and two learning
rates takes under 90 minutes on two cores with ``--jobs 2``).

Comparison mode: one multirun over family × size (``--jobs N``: N runs at once, each on one thread; the budgets are
then measured under the same sharing).  Each run trains ``floor(budget / seconds per step)`` optimizer steps with
its one-cycle schedule planned over them (:class:`stablenets.callbacks.TimeBudget`; the budget counts training,
validation is timed apart), then is certified and attacked (PGD) at the preset's radii with the certificate audit.
The sweep dir is named by everything that changes the study — the preset, the budget, the overrides that change what is
computed — so runs of another budget are never selected among: ``outputs/sweeps/layers_compared_<data>
__budget=<budget>[__<overrides>]/``. It gets ``comparison.csv`` and ``comparison.md`` (per family and size: clean
accuracy on the whole test split, certified and PGD accuracy at each ε on the curve's images, steps and epochs trained,
seconds per step over the whole run and its ratio to CPL's, training and validation seconds, peak memory, parameters,
the certified bound, audit violations) and ``certified_vs_time.png``. Runs of one family and size that differ in their
training settings (a grid given as overrides, e.g. ``task.optimizer.lr=0.02,0.1``) are all in ``comparison_all.csv``;
``comparison.csv`` keeps, per family and size, the one with the best validation certified accuracy
(``val/certified_acc``: never the test numbers). ``--from-search`` trains each family and size with the learning rate
and weight decay its search selected, into a dir of its own (``...__from_search``).

Search mode (``--search``): random search over the learning rate (log-uniform, the one-cycle peak) and the weight
decay (log-uniform), each trial a run on the budget, selected by certified accuracy on the validation split at ε*
(``val/certified_acc``) — through Hydra's Optuna sweeper, one study per family and size; ``search_best.csv``
(best lr, weight decay and validation certified accuracy per family and size) in ``..._search/``.
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
from stablenets.nn.layers import FAMILIES  # noqa: E402
from stablenets.plotting import save_figure  # noqa: E402
from stablenets.runner.sweeps import launch_sweep, study_group  # noqa: E402

LAYERS = list(FAMILIES)
PRESETS = {  # --data: (experiment preset, its ε*)
    "fmnist": ("layers_compared_fmnist", 0.25),
    "fmnist_cpu": ("layers_compared_fmnist_cpu", 0.25),
    "cifar10": ("layers_compared_cifar10", 0.1412),
}
DEFAULT_BUDGET = "00:00:10:00"  # per run, for a preset that sets no trainer.max_time of its own
LAYER_KEY, SIZE_KEY = "model/layer", "model.size"
LR_KEY, WD_KEY = "task.optimizer.lr", "task.optimizer.weight_decay"
# random-search ranges (log-uniform): the one-cycle peak learning rate and the weight decay
LR_RANGE, WD_RANGE = (1e-3, 1.0), (1e-6, 1e-2)


def comparison_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run: accuracies at each ε, what it trained, its costs, and the checks."""
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
        # clean: the whole test split; the curve (certified and PGD at each ε) is on its first attack.n_eval images
        row["clean"] = pd.to_numeric(r.get("test/acc"), errors="coerce")
        mine = curves[curves.run_dir == r.run_dir] if not curves.empty and "run_dir" in curves else None
        for _, point in mine.sort_values("eps").iterrows() if mine is not None else ():
            e = f"{point.eps:g}"
            if point.eps == 0:
                row["clean (curve's images)"] = point.pgd_acc
            else:
                row[f"certified@{e}"] = point.certified_acc
                row[f"pgd@{e}"] = point.pgd_acc
        steps, planned_steps, planned_epochs = (
            pd.to_numeric(r.get(k), errors="coerce") for k in ("budget/steps_reached", "budget/steps", "budget/epochs")
        )
        row["steps"] = steps
        row["epochs"] = steps * planned_epochs / planned_steps if planned_steps else math.nan
        # seconds per step over the whole run (a step may get dearer as training goes: the gradient-flow block's
        # sub-steps grow with its learned T), not the first timed steps the plan started from
        row["s/step"] = pd.to_numeric(r.get("budget/train_seconds"), errors="coerce") / steps if steps else math.nan
        for col, key in (
            ("train s", "budget/train_seconds"),
            ("val s", "budget/val_seconds"),
            ("peak MB", "memory/peak_mb"),
            ("params", "model/parameters"),
            ("L bound", "test/lipschitz_bound"),
            ("audit violations", "test/certificate_violations"),
            ("val certified", "val/certified_acc"),
        ):
            row[col] = pd.to_numeric(r.get(key), errors="coerce")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    cpl = table[table.layer == "cpl"].groupby("size")["s/step"].mean()  # mean over CPL's runs
    table.insert(
        table.columns.get_loc("s/step") + 1,
        "time vs CPL",
        [
            r["s/step"] / cpl[r["size"]] if r["size"] in cpl and cpl[r["size"]] else math.nan
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
            if pd.notna(r.get(col)) and pd.notna(r.get("s/step")):
                ax.scatter(
                    r["s/step"],
                    r[col],
                    color=colours(i),
                    marker=markers.get(r["size"], "o"),
                    label=f"{layer} {r['size']}",
                )
                ax.annotate(
                    f"{layer} {r['size']}",
                    (r["s/step"], r[col]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("seconds per optimizer step (training)")
    ax.set_ylabel(f"certified accuracy at ε = {eps:g}")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_figure(fig, out)


def searched_settings(path: Path, layers: list[str], sizes: list[str]) -> list[tuple[str, str, float, float]]:
    """``(layer, size, lr, weight decay)`` of a search's ``search_best.csv`` (a file, or the dir holding it), for
    the requested layers and sizes; a missing, damaged or incomplete file is an error, before any run."""
    path = path / "search_best.csv" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"layers_compared: no search results at {path} (run with --search first)")
    try:
        best = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SystemExit(
            f"layers_compared: {path} is damaged ({type(e).__name__}: {e}); run the search again"
        ) from None
    columns = {"layer", "size", "status", "lr", "weight_decay"}
    if not columns <= set(best.columns):
        raise SystemExit(
            f"layers_compared: {path} is not a search's result (it lacks {sorted(columns - set(best.columns))}); "
            "run the search again"
        )
    found = {}
    for r in best.itertuples():
        lr, wd = pd.to_numeric(r.lr, errors="coerce"), pd.to_numeric(r.weight_decay, errors="coerce")
        if r.status == "finished" and pd.notna(lr) and pd.notna(wd) and lr > 0 and wd >= 0:
            found[(r.layer, r.size)] = (float(lr), float(wd))
    missing = [f"{layer} {size}" for layer in layers for size in sizes if (layer, size) not in found]
    if missing:
        raise SystemExit(f"layers_compared: {path} has no finished search for {', '.join(missing)}")
    return [(layer, size, *found[(layer, size)]) for layer in layers for size in sizes]


def preset_budget(preset: str) -> str:
    """The budget per run the preset sets (``trainer.max_time``), else :data:`DEFAULT_BUDGET`."""
    from stablenets.api import compose

    return compose([f"experiment={preset}"]).trainer.max_time or DEFAULT_BUDGET


def study(args, suffix: str = "") -> str:
    """The study's sweep group: the preset and the budget (and, through ``launch_sweep``, the overrides that change
    what is computed) name it, so that runs of another budget or preset are never compared with these."""
    return args.group or f"layers_compared_{args.data}__budget={args.budget}{suffix}"


def launcher(args) -> list[str]:
    """``--jobs N``: N runs at once (processes of the joblib launcher), each on one thread."""
    if args.jobs > 1 and not any(o.startswith("hydra/launcher=") for o in args.overrides):
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    return []


def compare(args, layers: list[str], sizes: list[str]) -> int:
    preset, eps_star = PRESETS[args.data]
    common = [
        f"experiment={preset}",
        f"trainer.max_time={args.budget}",
        f"trainer.max_epochs={args.max_epochs}",
        "num_threads=1",
        *launcher(args),
    ]
    if args.from_search:  # each family and size with its own searched lr and weight decay, into one study
        group = study(args, "__from_search")
        for layer, size, lr, wd in searched_settings(Path(args.from_search), layers, sizes):
            sweep = launch_sweep(
                [*common, f"{LAYER_KEY}={layer}", f"{SIZE_KEY}={size}", f"{LR_KEY}={lr:.6g}", f"{WD_KEY}={wd:.6g}"],
                args.overrides,
                group,
            )
    else:
        sweep = launch_sweep(
            [*common, f"{LAYER_KEY}={','.join(layers)}", f"{SIZE_KEY}={','.join(sizes)}"], args.overrides, study(args)
        )
    runs, curves = read_sweep(sweep) if sweep.is_dir() else (pd.DataFrame(), pd.DataFrame())
    if runs.empty:
        print(f"layers_compared: no run wrote anything under {sweep}: see the sweep's output above", file=sys.stderr)
        return 1
    for _, r in runs[runs.status != "finished"].iterrows():
        print(
            f"layers_compared: {r.run_dir}: {r.status} {r.get('error', '') if isinstance(r.get('error'), str) else ''}"
        )
    every = comparison_table(runs, curves)
    every.to_csv(sweep / "comparison_all.csv", index=False)
    if not (runs.status == "finished").any():
        print(
            f"layers_compared: no run of {sweep} finished (every one is listed above and in comparison_all.csv)",
            file=sys.stderr,
        )
        return 1
    table = select_best(every)
    table.to_csv(sweep / "comparison.csv", index=False)
    (sweep / "comparison.md").write_text(markdown(table))
    print(markdown(table))
    figure(
        table[table.status == "finished"],
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
    base = study(args, "__search")
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
                    f"hydra.sweeper.n_jobs={args.jobs}",
                    f"task.optimizer.lr=tag(log,interval({LR_RANGE[0]},{LR_RANGE[1]}))",
                    f"task.optimizer.weight_decay=tag(log,interval({WD_RANGE[0]},{WD_RANGE[1]}))",
                ],
                args.overrides,
                f"{base}_{layer}_{size}",
            )
            found = sweep / "optimization_results.yaml"
            runs, _ = read_sweep(sweep) if sweep.is_dir() else (pd.DataFrame(), None)
            done = int((runs.status == "finished").sum()) if not runs.empty else 0
            try:
                res = yaml.safe_load(found.read_text()) if found.is_file() else None
                value, params = res["best_value"], res["best_params"]
            except (yaml.YAMLError, KeyError, TypeError):
                res = None
            if res is None or not done:  # no trial finished (each failed one is listed in its study dir)
                failed = True
                best.append(
                    {"layer": layer, "size": size, "status": "no result", "trials": len(runs), "trials finished": done}
                )
                continue
            best.append(
                {
                    "layer": layer,
                    "size": size,
                    "status": "finished",
                    "lr": params.get("task.optimizer.lr"),
                    "weight_decay": params.get("task.optimizer.weight_decay"),
                    "val certified": value,
                    "trials": len(runs),
                    "trials finished": done,
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
    parser.add_argument(
        "--budget",
        default=None,
        help="wall-clock budget per run, DD:HH:MM:SS (default: the preset's trainer.max_time, else 10 min)",
    )
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
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each): 2 on two cores")
    parser.add_argument("--group", default=None, help="the sweep's name (default: from the preset and the budget)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    layers, sizes = args.layers.split(","), args.sizes.split(",")
    unknown = [x for x in layers if x not in LAYERS] + [s for s in sizes if s not in ("XS", "S", "M", "L")]
    if unknown:
        parser.error(f"unknown layer families or sizes: {unknown} (layers: {LAYERS}; sizes: XS, S, M, L)")
    if args.trials < 1 or args.max_epochs < 1 or args.jobs < 1:
        parser.error("--trials, --max-epochs and --jobs must be >= 1")
    from stablenets.runner.validation import budget_seconds

    args.budget = args.budget or preset_budget(PRESETS[args.data][0])
    try:
        seconds = budget_seconds(args.budget)
    except ValueError as e:
        parser.error(str(e))
    if not seconds > 0:
        parser.error(f"--budget {args.budget} leaves no time to train: give a positive DD:HH:MM:SS")
    if args.search and args.from_search:
        parser.error("--search and --from-search exclude each other (search first, then compare from its results)")
    sys.exit(search(args, layers, sizes) if args.search else compare(args, layers, sizes))


if __name__ == "__main__":
    main()
