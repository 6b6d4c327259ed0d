"""Independent check of a finished run's guarantees: no Lipschitz ratio above the bound, no PGD success
inside a certified radius; and how tight each layer's certified norm is.

    python scripts/certify_check.py <run dir> [--n 200] [--n-iter 200] [--chunk 64]

1. ``max ‖f(x) − f(y)‖/‖x − y‖`` searched (random pairs, Jacobian power iteration, gradient ascent) around
   test images, for the feature extractor and the whole net (each must stay ≤ its certified bound);
2. a strong L2-PGD (margin loss, random restarts) at a grid of ε: any success on a point whose certified
   radius (the run's ``certificate``: m(x)/(√2 L), or per class pair) exceeds ε is a violation (must be 0);
3. for every layer with a linear operator (the spectral layers of the gradient-flow blocks and CPL, every family's
   kernel, per-frequency symbol or matrix): its certified norm against its true norm (a power method run to
   convergence from noise, a lower bound): ``bound / true`` per layer and the largest — the step a norm-dependent
   block takes in evaluation is shorter than in training by that factor.

The searches run in chunks of ``--chunk`` images (the Fourier families' and SOC's intermediates are large).
"""

from __future__ import annotations

import argparse

import torch

from stablenets.contracts import BoundedBody
from stablenets.eval import load_run
from stablenets.nn.convolution import conv_same, conv_same_adjoint
from stablenets.nn.layers import LipschitzLayer
from stablenets.nn.power import power_method
from stablenets.nn.spectral import SpectralOperator
from stablenets.robustness import certified_radius, empirical_lipschitz, pgd_l2


@torch.no_grad()
def true_norm(op, op_t, shape: tuple[int, ...], iters: int = 3000, tol: float = 1e-10) -> float:
    """``‖A‖`` by the power method from noise, to convergence (a lower bound that approaches it)."""
    u = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma, _, _ = power_method(op, op_t, u, n_iters=20, tol=tol, max_iters=iters)
    return float(sigma)


def _adjoint(op, shape: tuple[int, ...]):
    """The adjoint of a linear map, by its vector-Jacobian product (the same at every point)."""
    u0 = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = op(u0)

    def op_t(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(out, u0, v, retain_graph=True)
        return g

    return op_t


def norm_ratios(net: torch.nn.Module) -> list[tuple[str, float, float]]:
    """``(layer, certified norm, true norm)`` of every layer with a linear operator (see the module docstring):
    the spectral layers, and each family's operator — a kernel as its padding applies it, a per-frequency symbol
    on its grid (padded and cropped where the family zero-pads), a matrix (exact: its largest singular value)."""
    rows = []
    for name, m in net.named_modules():
        if isinstance(m, LipschitzLayer) and m.operator_kind == "symbol":
            q = m.eval_operator().detach().to(torch.complex128)
            op = lambda u, m=m, q=q: m.apply_symbol(u, q)  # noqa: E731
            shape = (q.shape[-1], *m.in_shape[1:])  # a two-sided family's operator takes more channels
            rows.append((name, m.operator_norm(q), true_norm(op, _adjoint(op, shape), shape)))
        elif isinstance(m, LipschitzLayer) and m.operator_kind == "matrix":
            w = m.eval_operator().detach().double()
            rows.append((name, m.operator_norm(w), float(torch.linalg.matrix_norm(w, 2))))
        elif isinstance(m, SpectralOperator):
            w = m.weight.detach().double()
            shape = m.u.shape[1:] if m.u.dim() > 1 else m.u.shape
            ops = m._ops(w) if hasattr(m, "_ops") else (lambda u, w=w: u @ w.T, lambda v, w=w: v @ w)
            rows.append((name, float(m.certified_norm()), true_norm(*ops, tuple(shape))))
        elif isinstance(m, LipschitzLayer) and m.operator_kind == "kernel":
            k = m.eval_operator().detach().double()
            mode = m.padding_mode
            rows.append(
                (
                    name,
                    m.operator_norm(k),
                    true_norm(
                        lambda u, k=k, mode=mode: conv_same(u, k, None, mode),
                        lambda v, k=k, mode=mode: conv_same_adjoint(v, k, mode),
                        tuple(m.operator_shape),
                    ),
                )
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-iter", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=64, help="images per forward of the searches")
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
        ratio = max(
            empirical_lipschitz(
                f,
                x[i : i + args.chunk],
                n_pairs=min(128, 2 * args.chunk),
                ascent_steps=100,
                generator=g,
                jacobian_points=min(64, args.chunk),
            )
            for i in range(0, min(len(x), 128), args.chunk)
        )
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
    res = pgd_l2(
        net,
        x,
        y,
        eps,
        n_iter=args.n_iter,
        loss="margin",
        random_start=True,
        restarts=3,
        generator=g,
        chunk_size=args.chunk,
    )
    violations = sum(int((res.broken[i] & correct & (radius > e)).sum()) for i, e in enumerate(eps))
    print(
        f"certificates ({convention}): bound L = {bound:.4f}, "
        f"median certified radius {float(radius[correct].median()):.4f}; "
        f"PGD-{args.n_iter} x3 restarts at {len(eps)} eps on {len(x)} images: {violations} violations"
    )
    rows = norm_ratios(net)
    if rows:
        print(f"layer norms (certified / true, the true norm a power method to convergence): {len(rows)} layers")
        for name, cert, true in rows:
            print(f"  {name:32s} certified {cert:.6f}  true {true:.6f}  bound/true {cert / max(true, 1e-30):.6f}")
        worst = max(rows, key=lambda r: r[1] / max(r[2], 1e-30))
        print(f"largest bound/true: {worst[1] / max(worst[2], 1e-30):.6f} ({worst[0]})")


if __name__ == "__main__":
    main()
