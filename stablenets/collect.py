"""``stablenets-collect <sweep dir>``: every run of a sweep in one pandas table, plus overlay plots.

Each job dir (one per override combination, holding ``.hydra/overrides.yaml``) becomes one row of
``runs.csv`` — swept overrides as columns, then status (``finished`` / ``failed`` / ``unfinished`` /
``damaged``: a file of the run cannot be read, named in ``error``), what produced the run (``version``,
``git_commit``, ``git_dirty``: see :mod:`stablenets.runner.provenance`; empty for
runs written before they were recorded) and metrics — and, when it has a robustness curve, one row per ε
of ``curves.csv``.  Failed and unfinished runs are listed, never dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .runner.errors import ConfigError
from .runner.files import read_yaml
from .runner.overrides import parse_overrides
from .runner.provenance import FIELDS as PROVENANCE  # results.json fields naming the code that ran
from .runner.run_dir import OVERRIDES, RESULTS, STATES, RunDir

STATUS = STATES


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(
        p.parent.parent
        for p in Path(sweep_dir).rglob(OVERRIDES)
        if "eval" not in p.parent.parent.relative_to(sweep_dir).parts
    )


def read_run(run: RunDir, name: str) -> tuple[dict, list[dict]]:
    """``(row, curve rows)`` of one run: its overrides, status (:meth:`RunDir.status`), provenance and metrics."""
    status = run.status()
    if status.state == "damaged":
        return {"run_dir": name, "status": "damaged", "error": status.reason}, []
    overrides = parse_overrides(read_yaml(run.overrides, list) or [])
    row = {"run_dir": name, **overrides, "status": status.state}
    if status.state == "failed":
        row["error"] = status.reason
    if status.state != "finished":
        return row, []
    res = run.saved_results()
    row.update({k: res.get(k) for k in PROVENANCE})
    row.update({k: v for k, v in res["metrics"].items() if "/eps_" not in k and not k.startswith("power/")})
    rob = res.get("robustness") or {}
    curves = [
        {"run_dir": name, **overrides, **point, "certificate": rob.get("certificate")} for point in rob.get("curve", [])
    ]
    return row, curves


def read_sweep(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, curves)`` for every job dir under ``sweep_dir``: a run whose files cannot be read is listed as
    damaged, naming the file; the other runs are read as usual."""
    sweep_dir = Path(sweep_dir)
    runs, curves = [], []
    for d in run_dirs(sweep_dir):
        name = str(d.relative_to(sweep_dir)) or "."
        try:
            row, points = read_run(RunDir(d), name)
        except (ConfigError, KeyError, TypeError, AttributeError, ValueError) as e:  # a results.json of odd shape
            row, points = {"run_dir": name, "status": "damaged", "error": f"{d / RESULTS} is damaged: {e!r}"}, []
        runs.append(row)
        curves += points
    return pd.DataFrame(runs), pd.DataFrame(curves)


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """Override columns whose value differs between runs."""
    skip = {"run_dir", "status", "error", *PROVENANCE}
    keys = [c for c in runs.columns if "/" not in c and c not in skip]
    return [k for k in keys if runs[k].nunique(dropna=False) > 1]


def plot_sweep(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out: Path,
    by: list[str] | None = None,
    x: str | None = None,
    y: str = "test/acc",
) -> list[Path]:
    """Robustness curves overlaid (one line per run, labelled by the ``by`` overrides) and, with ``x``,
    a trade-off plot of the metric ``y`` against the override ``x``."""
    from .plotting import plot_curves

    written = []
    by = by or swept_keys(runs)
    if not curves.empty:
        for metric in ("pgd_acc", "certified_acc", "autoattack_acc"):
            if metric not in curves or curves[metric].isna().all():
                continue
            lines = {}
            for run, g in curves.groupby("run_dir"):
                label = ", ".join(f"{k}={g[k].iloc[0]}" for k in by if k in g) or run
                lines[label] = (g["eps"].tolist(), g[metric].tolist())
            written.append(plot_curves(lines, out / f"curves_{metric}.png", "ε (L2)", metric))
    if x and x in runs and y in runs:
        done = runs[runs.status == "finished"].copy()
        done[x] = pd.to_numeric(done[x])
        rest = [k for k in by if k != x and k in done]
        groups = done.groupby(rest) if rest else [("all", done)]
        lines = {
            (", ".join(map(str, k)) if isinstance(k, tuple) else str(k)): (
                g.sort_values(x)[x].tolist(),
                g.sort_values(x)[y].tolist(),
            )
            for k, g in groups
        }
        written.append(plot_curves(lines, out / f"tradeoff_{y.replace('/', '_')}_vs_{x}.png", x, y, logx=True))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stablenets-collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", help="where to write runs.csv, curves.csv and plots (default: the sweep dir)")
    parser.add_argument("--by", nargs="*", help="overrides that label the curves (default: every swept one)")
    parser.add_argument("--x", help="override for a trade-off plot, e.g. lipschitz.L")
    parser.add_argument("--y", default="test/acc", help="metric of the trade-off plot")
    args = parser.parse_args(argv)
    sweep = Path(args.sweep_dir)
    if not sweep.is_dir():
        parser.error(f"{sweep} is not a directory")
    runs, curves = read_sweep(sweep)
    if runs.empty:
        parser.error(f"no runs under {sweep} (looked for */.hydra/overrides.yaml)")
    out = Path(args.out or sweep)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    plots = plot_sweep(runs, curves, out, args.by, args.x, args.y)
    counts = runs.status.value_counts().reindex(STATUS, fill_value=0)
    print(
        f"stablenets-collect: {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}), "
        f"{len(curves)} curve rows -> {out / 'runs.csv'}, {out / 'curves.csv'}"
    )
    code = runs.loc[runs.status == "finished", list(PROVENANCE)].drop_duplicates() if "version" in runs else []
    if len(code) > 1:
        print(f"  note: the finished runs come from {len(code)} code versions (columns {', '.join(PROVENANCE)})")
    for _, r in runs[runs.status != "finished"].iterrows():
        print(f"  {r.status}: {r.run_dir} {r.get('error', '') if r.status in ('failed', 'damaged') else ''}")
    for p in plots:
        print(f"  plot: {p}")


if __name__ == "__main__":
    main()
