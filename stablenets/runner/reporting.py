"""What a finished evaluation leaves on disk and on the terminal: CSV tables, the paper's figures and the
run's summary.  Tasks compute (``Task.evaluate`` → :class:`~stablenets.contracts.Evaluation`); this module
writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contracts import Evaluation


def write_report(evaluation: Evaluation, out_dir: str | Path, datamodule, net, title: str = "") -> None:
    """Tables and figures of one evaluation, by what it holds, and the data set's own figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if evaluation.robustness is not None:
        _robustness(evaluation.robustness, out_dir, title)
    if "reconstructions" in evaluation.figures:
        _reconstructions(evaluation.figures["reconstructions"], evaluation.metrics, out_dir, title)
    if "rollouts" in evaluation.figures:
        from ..plotting.dynamics import plot_fields_and_rollouts

        r = evaluation.figures["rollouts"]
        plot_fields_and_rollouts(net, datamodule, r["pred"], r["true"], out_dir / "dynamics.png", title=title)
    datamodule.figures(net, out_dir, title=title)


def _robustness(rob: dict, out_dir: Path, title: str) -> None:
    import pandas as pd

    from ..plotting import plot_curves

    df = pd.DataFrame(rob["curve"])
    df.to_csv(out_dir / "robustness.csv", index=False)
    curves = {"PGD": (df.eps, df.pgd_acc)}
    if df.certified_acc.notna().any():
        curves[f"certified ({rob['certificate']})"] = (df.eps, df.certified_acc)
    if "certified_sqrt2_acc" in df:
        curves["certified (sqrt2)"] = (df.eps, df.certified_sqrt2_acc)
    if df.autoattack_acc.notna().any():
        curves["AutoAttack"] = (df.eps, df.autoattack_acc)
    plot_curves(curves, out_dir / "robustness.png", "ε (L2)", "accuracy", title=title)


def _reconstructions(rec: dict, metrics: dict, out_dir: Path, title: str) -> None:
    import pandas as pd

    from ..plotting import plot_point_sets

    y, x, pred, tik = (rec[k] for k in ("y", "x", "pred", "tikhonov"))
    pd.DataFrame(
        {"y1": y[:, 0], "y2": y[:, 1], "x1": x[:, 0], "x2": x[:, 1], "pred1": pred[:, 0], "pred2": pred[:, 1]}
    ).to_csv(out_dir / "test_predictions.csv", index=False)
    bound = metrics.get("test/lipschitz_bound", float("nan"))
    plot_point_sets(
        {
            "ground truth": {"x†": x.numpy()},
            f"Tikhonov τ*={rec['tau_star']:.3g}": {"x̂": tik.numpy()},
            f"{title or 'net'} (L={bound:.3g})": {"x̂": pred.numpy()},
        },
        out_dir / "reconstruction.png",
    )


def print_summary(metrics: dict[str, Any], out_dir: str | Path, evaluation: Evaluation | None = None) -> None:
    print("stablenets: results\n" + summary(metrics, evaluation, out_dir))


def summary(metrics: dict[str, Any], evaluation: Evaluation | None, out_dir: str | Path) -> str:
    """The end-of-run table: clean accuracy (or MSE), the robustness curve by ε, the bound, times, the dir."""
    lines = []
    scalar = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    head = [
        (k, scalar[k])
        for k in (
            "test/acc",
            "test/mse",
            "test/trajectory_mse",
            "tikhonov/test_mse",
            "test/lipschitz_bound",
            "test/lipschitz_measured",
            "test/long_converged_frac",
            "test/lyapunov_holds_frac",
            "model/substeps",
            "model/substeps_cap",
        )
        if k in scalar
    ]
    width = max([len(k) for k, _ in head] + [0])
    lines += [f"  {k:<{width}}  {v:.4g}" for k, v in head]
    rob = evaluation.robustness if evaluation is not None else None
    if rob:
        cols = [
            ("pgd_acc", "PGD"),
            ("autoattack_acc", "AutoAttack"),
            ("certified_acc", f"certified ({rob['certificate']})"),
            ("certified_sqrt2_acc", "certified (sqrt2)"),
        ]
        cols = [(k, name) for k, name in cols if any(r.get(k) is not None for r in rob["curve"])]
        lines.append("  " + f"{'ε':>8}" + "".join(f"{name:>22}" for _, name in cols))
        for r in rob["curve"]:
            lines.append("  " + f"{r['eps']:>8.4g}" + "".join(f"{r[k]:>22.3f}" for k, _ in cols))
        audit = rob["certificate_audit"]
        if audit["audited"]:
            lines.append(
                f"  certificate audit: {audit['violations']} violations in {audit['audited']} attacked certified pairs"
            )
    times = [
        f"{name} {scalar[k]:.1f} s"
        for k, name in (
            ("train/seconds", "train"),
            ("test/pgd_seconds", "PGD curve"),
            ("test/autoattack_seconds", "AutoAttack"),
            ("eval/seconds", "evaluation"),
        )
        if k in scalar
    ]
    if times:
        lines.append("  time: " + ", ".join(times))
    lines.append(f"  outputs: {out_dir}")
    return "\n".join(lines)
