"""Section 6.1: Tikhonov closed form, its Lipschitz constant (eq. 34), and InvNet's bound."""

from __future__ import annotations

import pytest
import torch

from problems import compose_cfg
from stablenets.baselines import grid_search, lipschitz_of_tau, reconstruct, reconstruction_matrix, tau_for_lipschitz
from stablenets.data import InverseProblemDataModule
from stablenets.data.inverse import forward_operator
from stablenets.models import InvNet
from stablenets.robustness import empirical_lipschitz
from stablenets.train import train

A = forward_operator(0.25).double()


@pytest.mark.parametrize("tau", [1e-3, 0.05, 1.0, 10.0])
def test_tikhonov_is_the_minimiser(tau):
    y = torch.randn(5, 2, dtype=torch.float64)
    x_hat = reconstruct(A, y, tau).requires_grad_(True)
    objective = ((x_hat @ A.T - y) ** 2).sum() + tau * (x_hat**2).sum()
    (grad,) = torch.autograd.grad(objective, x_hat)
    assert grad.abs().max() < 1e-10
    # and it is a minimum: any perturbation increases the (strictly convex) objective
    with torch.no_grad():
        bumped = x_hat + 1e-3 * torch.randn_like(x_hat)
        assert ((bumped @ A.T - y) ** 2).sum() + tau * (bumped**2).sum() > objective


@pytest.mark.parametrize("tau", [1e-4, 0.05, 0.5, 5.0])
def test_lipschitz_of_tau_is_the_operator_norm(tau):
    assert torch.isclose(
        lipschitz_of_tau(A, tau), torch.linalg.matrix_norm(reconstruction_matrix(A, tau), 2), rtol=1e-10
    )


@pytest.mark.parametrize("L", [0.1, 0.5, 2.0, 3.9])
def test_tau_for_target_lipschitz(L):
    tau = tau_for_lipschitz(A, L)
    assert abs(float(lipschitz_of_tau(A, tau)) - L) < 1e-8 * max(1, L)


def test_target_beyond_reach_gives_plain_inverse():
    assert tau_for_lipschitz(A, 10.0) == 0.0
    assert torch.isclose(lipschitz_of_tau(A, 0.0), torch.tensor(4.0, dtype=torch.float64))


def test_grid_search_finds_the_best_tau():
    dm = InverseProblemDataModule(seed=0)
    y, x = dm.arrays("train")
    res = grid_search(dm.A, y, x)
    assert res["errors"].argmin() not in (0, len(res["taus"]) - 1)  # an interior optimum
    assert res["L_star"] == pytest.approx(float(lipschitz_of_tau(dm.A, res["tau_star"])))


@pytest.mark.parametrize("L", [0.3, 1.0, 5.0])
def test_invnet_never_exceeds_its_bound(L):
    torch.manual_seed(0)
    net = InvNet((2,), 2, L=L)
    for p in net.parameters():
        p.data.normal_(0, 1.0)
    net.c.data.fill_(-10.0)  # beyond L: the clamp holds the scale at -L
    net.eval()
    bound = net.lipschitz_bound()
    measured = empirical_lipschitz(net, torch.randn(128, 2) * 2, n_pairs=256, ascent_steps=80)
    assert measured <= bound * (1 + 1e-4) and bound <= L * (1 + 1e-12)
    assert measured >= 0.05 * L  # the search is not vacuous
    assert all(b.n_steps > 1 for b in net.layers)  # large weights: the guarantee holds through more sub-steps


def test_trained_invnet_run_reports_measured_below_bound(tmp_path):
    cfg = compose_cfg(["experiment=inverse_invnet", "trainer.max_steps=300", "lipschitz.scale=0.5"], tmp_path)
    metrics, objects = train(cfg)
    L = objects["lipschitz_L"]
    assert L == pytest.approx(0.5 * metrics["tikhonov/L_star"])
    assert metrics["test/lipschitz_measured"] <= metrics["test/lipschitz_bound"] * (1 + 1e-4)
    assert metrics["test/lipschitz_bound"] <= L * (1 + 1e-6)
    assert (tmp_path / "reconstruction.png").exists() and (tmp_path / "test_predictions.csv").exists()
