"""Robustness curves as W&B points against their own x-axis, so a sweep's workspace overlays them natively.

Each point of a run's curve is logged as one history row ``{robustness/eps: ε, robustness/pgd_acc: ...,
robustness/certified_acc: ..., robustness/autoattack_acc: ..., robustness/certified_sqrt2_acc: ...}``
(the kinds the curve has), and ``wandb.define_metric`` makes ``robustness/eps`` the step metric of each
accuracy.  W&B's line plots of ``robustness/pgd_acc`` etc. then have ε on the x-axis, and a workspace of
runs (grouped by the run's ``group``, the sweep's name; filterable by any config key, the full resolved
config being the run's config) overlays the PGD, AutoAttack and certified curves of all its runs without a
custom chart.  The curve's table and ``wandb.plot.line`` are logged as well (train.py).
"""

from __future__ import annotations

from typing import Any

EPS = "robustness/eps"
KINDS = ("pgd_acc", "autoattack_acc", "certified_acc", "certified_sqrt2_acc")


def log_curve_points(run, curve: list[dict[str, Any]]) -> int:
    """Define the ε axis and log one row per point of ``curve`` to the W&B ``run``; return the rows logged."""
    kinds = [k for k in KINDS if any(row.get(k) is not None for row in curve)]
    if not kinds:
        return 0
    run.define_metric(EPS, hidden=False)
    for kind in kinds:  # exact names: they take precedence over a logger's "*" glob (Lightning's global step)
        run.define_metric(f"robustness/{kind}", step_metric=EPS)
    for row in sorted(curve, key=lambda r: r["eps"]):
        run.log({EPS: float(row["eps"]), **{f"robustness/{k}": float(row[k]) for k in kinds if row.get(k) is not None}})
    return len(curve)
