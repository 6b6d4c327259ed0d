"""Section 6.1 (Figures 1, 6-11): Tikhonov regularisation vs InvNet_L with L ∈ {L*/3, L*, 3L*}.

    python experiments/inverse_problem.py                  # one multirun over lipschitz.scale
    # = stablenets-train -m experiment=inverse_invnet lipschitz.scale=0.3333333333,1,3 hydra/launcher=local
    python experiments/inverse_problem.py data.n_train=20  # Exercise 15: small / large training sets

Writes into outputs/sweeps/inverse/: fig1_naive_inversion.png, fig6_training_set.png, fig7_tau_search.png,
fig8_lipschitz_of_tau.png, fig9_tikhonov.png, fig10_training_loss.png, fig11_invnet.png, inverse_table.csv.

Should give (paper): InvNet_{L*} and InvNet_{3L*} beat the best Tikhonov reconstruction, and every InvNet's
measured Lipschitz constant stays below its L.  Measured (seed 0, the preset's blocks capped at ‖A‖ ≤ 3): test MSE
best Tikhonov 0.0999 (τ*), InvNet_{L*/3} 0.0272, InvNet_{L*} 0.0170, InvNet_{3L*} 0.0171; measured Lipschitz
constant / bound 0.713 / 0.740, 1.932 / 2.220, 2.472 / 2.938; 25, 20, 20 sub-steps per forward (cap 25; ~1,100
uncapped); each evaluation 3-10 s (its Lipschitz search: 122 calls of the net).  The table lists each run's
training and evaluation seconds and sub-steps.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from stablenets.baselines import grid_search, lipschitz_of_tau, reconstruct, tau_for_lipschitz
from stablenets.collect import read_sweep
from stablenets.plotting import plot_curves, plot_point_sets
from stablenets.runner.sweeps import launch_sweep

SCALES = {"L*/3": 1 / 3, "L*": 1.0, "3L*": 3.0}


def data_module(overrides: list[str]):
    """The runs' data module, composed from the same config (it is seeded: the same sets)."""
    from stablenets.api import compose
    from stablenets.runner.config import build

    cfg = compose(["experiment=inverse_invnet", *overrides])
    dm = build("data", cfg.data, seed=cfg.seed)
    dm.setup()
    return dm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="inverse")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    t0 = time.perf_counter()
    scales = ",".join(f"{s:.10g}" for s in SCALES.values())
    sweep = launch_sweep(
        ["experiment=inverse_invnet", f"lipschitz.scale={scales}", "hydra/launcher=local"], args.overrides, args.group
    )

    # --- Tikhonov on the same data (the data module is seeded: same sets as the runs) ---
    dm = data_module(args.overrides)
    A = dm.A.double()
    y_tr, x_tr = dm.arrays("train")
    y_te, x_te = dm.arrays("test")
    tik = grid_search(A, y_tr, x_tr)
    L_star = tik["L_star"]
    naive = (y_te.double() @ torch.linalg.inv(A).t()).numpy()
    clean = (x_te.double() @ A.t() @ torch.linalg.inv(A).t()).numpy()
    plot_point_sets(
        {"x†": {"x†": x_te.numpy()}, "A⁻¹(Ax†)": {"noise-free": clean}, "A⁻¹y (noisy)": {"A⁻¹y": naive}},
        sweep / "fig1_naive_inversion.png",
        "Figure 1: naive inversion",
    )
    plot_point_sets(
        {"training set": {"x† (ground truth)": x_tr.numpy(), "y (measurement)": y_tr.numpy()}},
        sweep / "fig6_training_set.png",
        "Figure 6",
    )
    plot_curves(
        {"training MSE": (tik["taus"].tolist(), tik["errors"].tolist())},
        sweep / "fig7_tau_search.png",
        "τ",
        "mean ‖x̂_τ − x†‖²",
        f"Figure 7: τ* = {tik['tau_star']:.3g}",
        logx=True,
        logy=True,
        marker="",
    )
    plot_curves(
        {"L(τ)": (tik["taus"].tolist(), lipschitz_of_tau(A, tik["taus"]).tolist())},
        sweep / "fig8_lipschitz_of_tau.png",
        "τ",
        "L(τ) (eq. 34)",
        f"Figure 8: L* = {L_star:.3g}",
        logx=True,
        marker="",
    )
    rows, panels = [], {}
    for label, s in SCALES.items():
        tau = tau_for_lipschitz(A, s * L_star)
        pred = reconstruct(A, y_te.double(), tau)
        mse = float((pred - x_te.double()).pow(2).sum(1).mean())
        panels[f"Tikhonov L={label} (τ={tau:.3g})"] = {"x̂": pred.numpy(), "x†": x_te.numpy()}
        rows.append(
            {
                "method": f"Tikhonov L={label}",
                "L": s * L_star,
                "tau": tau,
                "test_mse": mse,
                "lipschitz_measured": float(lipschitz_of_tau(A, tau)),
            }
        )  # exact for a linear map
    plot_point_sets(panels, sweep / "fig9_tikhonov.png", "Figure 9: Tikhonov reconstructions")

    # --- InvNets from the sweep ---
    runs, _ = read_sweep(sweep)
    runs["scale"] = pd.to_numeric(runs["lipschitz.scale"])
    panels, losses = {}, {}
    for label, s in SCALES.items():
        r = runs.iloc[(runs.scale - s).abs().argmin()]
        run_dir = sweep / r.run_dir
        if r.status != "finished":
            rows.append({"method": f"InvNet L={label}", "status": r.status})
            continue
        rows.append(
            {
                "method": f"InvNet L={label}",
                "L": s * L_star,
                "test_mse": r["test/mse"],
                "lipschitz_bound": r["test/lipschitz_bound"],
                "lipschitz_measured": r["test/lipschitz_measured"],
                "train_seconds": r["train/seconds"],
                "eval_seconds": r.get("eval/seconds"),
                "substeps": r.get("model/substeps"),
                "substeps_cap": r.get("model/substeps_cap"),
            }
        )
        pred = pd.read_csv(run_dir / "test_predictions.csv")
        panels[f"InvNet L={label}"] = {"x̂": pred[["pred1", "pred2"]].values, "x†": pred[["x1", "x2"]].values}
        log = pd.read_csv(run_dir / "csv" / "metrics.csv")
        log = log.dropna(subset=["train/loss_step"])
        losses[f"InvNet L={label}"] = (log["step"].tolist(), log["train/loss_step"].tolist())
    plot_point_sets(panels, sweep / "fig11_invnet.png", "Figure 11: InvNet reconstructions")
    plot_curves(
        losses, sweep / "fig10_training_loss.png", "iteration", "training loss", "Figure 10", logy=True, marker=""
    )
    table = pd.DataFrame(rows)
    table.to_csv(sweep / "inverse_table.csv", index=False)
    best_tik = table[table.method.str.startswith("Tikhonov")].test_mse.min()
    print(f"τ* = {tik['tau_star']:.4g}, L* = {L_star:.4g}, best Tikhonov test MSE = {best_tik:.4g}")
    print(table.to_string(index=False))
    inv = table[table.method.str.startswith("InvNet")].set_index("method")
    for label in ("L*", "3L*"):
        if f"InvNet L={label}" in inv.index:
            print(f"InvNet_{{{label}}} beats the best Tikhonov: {inv.test_mse[f'InvNet L={label}'] < best_tik}")
    if "lipschitz_measured" in inv:
        print(
            "every measured Lipschitz constant <= its bound: "
            f"{bool((inv.lipschitz_measured <= inv.lipschitz_bound).all())}"
        )
    print(f"wall time {time.perf_counter() - t0:.0f} s (finished runs of the sweep dir are skipped, not re-run)")
    sys.exit(0 if (runs.status == "finished").all() else 1)


if __name__ == "__main__":
    main()
