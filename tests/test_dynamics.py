"""Sections 2 and 5: integrators on the oscillator; Lyapunov (eq. 29) and contracting (eq. 30) fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

from problems import compose_cfg
from stablenets.models import ContractingField, LyapunovStableField
from stablenets.systems.integrators import (
    energy,
    euler_energy_closed_form,
    explicit_euler,
    symplectic_energy_bounds,
    symplectic_euler,
)
from stablenets.train import train


@pytest.mark.parametrize("h", [0.01, 0.1, 0.5, 1.0])
def test_explicit_euler_energy_matches_closed_form(h):
    e = energy(explicit_euler(1.0, 0.0, h, 200))
    assert np.allclose(e, euler_energy_closed_form(0.5, h, 200), rtol=1e-10)


@pytest.mark.parametrize("h", [0.05, 0.5, 1.0, 1.5, 1.95])
def test_symplectic_euler_energy_stays_bounded(h):
    e = energy(symplectic_euler(1.0, 0.0, h, 20000))
    lo, hi = symplectic_energy_bounds(0.5, h)
    assert e.min() >= lo - 1e-9 and e.max() <= hi + 1e-9
    assert energy(symplectic_euler(1.0, 0.0, 2.05, 200))[-1] > 1e6  # beyond h = 2 it blows up


def _lyapunov_check(model: LyapunovStableField, n: int = 100_000) -> None:
    model = model.double().eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * 4
    v, grad = model.V_and_grad(x)
    field = model(x).detach()
    assert ((grad * field).sum(-1) <= -model.mu * v + 1e-9 * (1 + v)).all()  # Exercise 13
    assert (v > 0).all()
    assert float(model.V(model.x_bar[None])) == 0.0


def test_lyapunov_condition_untrained():
    torch.manual_seed(0)
    _lyapunov_check(LyapunovStableField((2,), 2))


def test_lyapunov_condition_after_training(tmp_path):
    cfg = compose_cfg(["experiment=dynamics_lyapunov", "trainer.max_epochs=3"], tmp_path)
    metrics, objects = train(cfg)
    _lyapunov_check(objects["net"])
    assert metrics["test/lyapunov_holds_frac"] == 1.0
    assert metrics["test/long_converged_frac"] == 1.0
    assert (tmp_path / "dynamics.png").exists()


def test_contracting_field_symmetric_part_negative_definite_and_rollouts_contract():
    torch.manual_seed(0)
    model = ContractingField((2,), 2).double()
    for p in model.parameters():
        p.data.normal_(0, 0.5)
    x = torch.randn(10_000, 2, dtype=torch.float64) * 3
    A = model.matrix(x)
    assert torch.linalg.eigvalsh((A + A.transpose(1, 2)) / 2).max() <= -model.eps + 1e-9
    t = torch.linspace(0, 20, 401, dtype=torch.float64)
    x0 = torch.randn(2, 2, dtype=torch.float64) * 3
    with torch.no_grad():
        traj = odeint(lambda _t, z: model(z), x0, t, method="rk4")
    dist = (traj[:, 0] - traj[:, 1]).norm(dim=-1)
    assert dist[-1] < 0.05 * dist[0]
    assert traj[-1].norm(dim=-1).max() < 1e-2  # both reach x̄ = 0
