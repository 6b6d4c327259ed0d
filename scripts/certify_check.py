"""Independent check of a finished run's guarantees: no Lipschitz ratio above the bound, no PGD success
inside a certified radius.

    python scripts/certify_check.py <run dir> [--n 200] [--n-iter 200]

1. ``max ‖f(x) − f(y)‖/‖x − y‖`` searched (random pairs, Jacobian power iteration, gradient ascent) around
   test images, for the feature extractor and the whole net (each must stay ≤ its certified bound);
2. a strong L2-PGD (margin loss, random restarts) at a grid of ε: any success on a point whose certified
   radius (the run's ``certificate``: m(x)/(√2 L), or per class pair) exceeds ε is a violation (must be 0).
"""

from __future__ import annotations

import argparse

import torch

from stablenets.contracts import BoundedBody
from stablenets.eval import load_run
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-iter", type=int, default=200)
    args = ap.parse_args()
    cfg, objects = load_run(args.run_dir)
    net = objects["net"].eval()
    x, y = (t[: args.n] for t in objects["datamodule"].test_set.tensors)
    bound = net.lipschitz_bound()
    g = torch.Generator().manual_seed(0)
    parts = {"whole net": (net, bound)}
    if isinstance(net, BoundedBody):
        parts["body"] = (net.body, net.body_bound())
    for name, (f, claimed) in parts.items():
        ratio = empirical_lipschitz(f, x[:64], n_pairs=128, ascent_steps=100, generator=g)
        print(
            f"{name}: searched ratio {ratio:.6f} vs bound {claimed:.6f} -> ratio/bound = {ratio / claimed:.6f} "
            f"({'OK' if ratio <= claimed * (1 + 1e-4) else 'VIOLATION'})"
        )
    convention = cfg.get("certificate", "sqrt2")  # the certificates the run reported
    lipschitz = net.pairwise_lipschitz() if convention == "pairwise" else bound
    with torch.no_grad():
        radius = certified_radius(net(x), lipschitz, convention)
    correct = net(x).argmax(1) == y
    eps = [float(e) for e in torch.linspace(0.01, float(radius.max()) * 1.2, 12)]
    res = pgd_l2(net, x, y, eps, n_iter=args.n_iter, loss="margin", random_start=True, restarts=3, generator=g)
    violations = sum(int((res.broken[i] & correct & (radius > e)).sum()) for i, e in enumerate(eps))
    print(
        f"certificates ({convention}): bound L = {bound:.4f}, "
        f"median certified radius {float(radius[correct].median()):.4f}; "
        f"PGD-{args.n_iter} x3 restarts at {len(eps)} eps on {len(x)} images: {violations} violations"
    )


if __name__ == "__main__":
    main()
