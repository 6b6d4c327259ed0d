"""Section 2 (Figure 3, Exercise 3) and Section 5 (Figure 5): structure-preserving integration, phase portraits.

    python experiments/integrators.py [--h 0.1] [--steps 600]

Writes outputs/figures/{fig3_integrators.png, fig5_phase_portraits.png} and prints the energy after n steps:
explicit Euler's equals E0 (1 + h²)^n; symplectic Euler's stays within [E0/(1+h/2), E0/(1-h/2)].
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stablenets.plotting.dynamics import plot_integrators, plot_phase_portraits
from stablenets.systems.integrators import (
    energy,
    euler_energy_closed_form,
    explicit_euler,
    linear_systems,
    symplectic_energy_bounds,
    symplectic_euler,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--h", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="outputs/figures")
    args = ap.parse_args()
    out = Path(args.out)
    e = energy(explicit_euler(1.0, 0.0, args.h, args.steps))
    s = energy(symplectic_euler(1.0, 0.0, args.h, args.steps))
    closed = euler_energy_closed_form(0.5, args.h, args.steps)
    lo, hi = symplectic_energy_bounds(0.5, args.h)
    print(
        f"h={args.h}, n={args.steps}: explicit Euler E_n={e[-1]:.6g} (closed form {closed[-1]:.6g}, "
        f"max rel. diff {abs(e / closed - 1).max():.1e}); symplectic Euler E in [{s.min():.4f}, {s.max():.4f}] "
        f"within [{lo:.4f}, {hi:.4f}]"
    )
    print("wrote", plot_integrators(1.0, 0.0, args.h, args.steps, out / "fig3_integrators.png"))
    print("wrote", plot_phase_portraits(linear_systems(), out / "fig5_phase_portraits.png"))


if __name__ == "__main__":
    main()
