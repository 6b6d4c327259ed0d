"""Flushing subnormals to zero (``flush_denormal``): it reaches every thread the run computes on, the run
records it, and certified norms bound the layers' maps whether the flag is on or off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from problems import compose_cfg
from stablenets.nn import GradientFlowBlock, SpectralConv2d, SpectralLinear
from stablenets.nn.layers import FAMILIES
from stablenets.nn.norms import conv_norm_bound, dense_norm_bound, flush_slack
from stablenets.robustness import empirical_lipschitz
from stablenets.runner.errors import ConfigError
from stablenets.runner.numerics import flush_denormals, flushing
from stablenets.train import train

TINY = torch.finfo(torch.float32).tiny  # 2^-126: the smallest normal float32
HALF = 2.0**63  # inputs times HALF, outputs times HALF: a layer of norm ~TINY seen at norm ~1 (no overflow)
TOL = 1 + 1e-4

_THREADS = """
import json, sys, torch
from stablenets.runner.numerics import flush_denormals, flushing
torch.set_num_threads(2)
if sys.argv[1] == "late":
    flushing()  # computes on the pool: its threads start before the flag
state = flush_denormals(True)
x = torch.full((1 << 18,), 2.0 ** -70)
print(json.dumps({"state": state, "nonzero": int(((x * x).view(torch.int32) != 0).sum()),
                  "off": flush_denormals(False)}))
"""


@pytest.fixture
def restore_flush():
    before = flushing()
    yield
    torch.set_flush_denormal(before is True)


@pytest.mark.parametrize("when", ["early", "late"])
def test_the_flag_reaches_the_threads_started_after_it_and_says_when_not(when, restore_flush):
    """x86 keeps the mode per thread and a new thread copies it: set before torch's pool starts, every thread
    flushes (2⁻⁷⁰·2⁻⁷⁰ = 2⁻¹⁴⁰ is written as 0); set after, only some do, and the run is told ``partial``.
    Turning it off again reaches only the calling thread, and says so."""
    if not torch.set_flush_denormal(False):
        pytest.fail("this CPU has no flush-to-zero mode (x86 with SSE3 has)")
    proc = subprocess.run(
        [sys.executable, "-c", _THREADS, when], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if when == "early":
        assert out["state"] is True and out["nonzero"] == 0
        assert out["off"] == "partial"
    else:
        assert out["state"] == "partial" and 0 < out["nonzero"] < 1 << 18
        assert out["off"] is False


def _set(on: bool) -> None:
    assert flush_denormals(on) is on


def _layer(kind: str, g: torch.Generator):
    """A layer whose weight straddles 2⁻¹²⁶: a quarter of its entries normal (±(1 to 2)·tiny), the rest
    subnormal (±(0.5 to 1)·tiny), so flushing changes its map by a large fraction.  No norm constraint: its
    bound is ‖A‖ itself."""
    layer = SpectralLinear(12, 9) if kind == "dense" else SpectralConv2d((3, 6, 6), 4)
    with torch.no_grad():
        size = 1 + torch.rand(layer.weight.shape, generator=g)
        sign = torch.randint(0, 2, size.shape, generator=g) * 2 - 1
        sub = torch.rand(size.shape, generator=g) < 0.75
        layer.weight.copy_(sign * torch.where(sub, size / 2, size) * TINY)
        layer.bias.zero_()
    return layer.eval()


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_a_bound_computed_in_either_mode_bounds_the_map_in_either_mode(kind):
    """The certified norm, computed with flush on or off, is at least the Lipschitz ratio found by search
    (random pairs, Jacobian power iteration, gradient ascent) of the forward pass run with flush on or off.
    Here the flushed map (subnormal entries read as 0) and the exact one differ by tens of percent, and the
    norm computed with flush on is the flushed weight's: without ``flush_slack`` it would not bound the
    forward pass run with flush off.

    In a fresh process: the flag is per thread, and the BLAS pool of a process in which a run already
    flushed keeps flushing whatever this thread is told (the runner sets it once, before any work)."""
    code = f"import test_flush_denormal as t; t.either_mode({kind!r})"
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checked" in proc.stdout


def either_mode(kind: str) -> None:
    torch.set_num_threads(1)  # every computation on this thread, which the flag reaches at once
    g = torch.Generator().manual_seed(0)
    layer = _layer(kind, g)
    assert (layer.weight.abs() < TINY).sum() > 0.5 * layer.weight.numel()
    norm = dense_norm_bound if kind == "dense" else (lambda w: conv_norm_bound(w, layer.in_shape, 1, 1))
    slack = flush_slack(layer.weight)
    bounds, ratios = {}, {}
    for on in (True, False):
        _set(on)
        layer._cert = layer._scale = None
        bounds[on] = float(layer.lipschitz_bound())
        assert bounds[on] == float(norm(layer.weight))
        x = torch.randn(24, *((12,) if kind == "dense" else layer.in_shape), generator=g)
        ratios[on] = (
            empirical_lipschitz(
                lambda v: layer(v * HALF).double() * HALF,
                x,
                n_pairs=64,
                ascent_steps=30,
                generator=torch.Generator().manual_seed(1),
            )
            / HALF**2
        )
        assert ratios[on] >= 0.9 * (bounds[on] - slack)  # the search finds the norm of the map it runs
    assert ratios[False] > 1.2 * ratios[True], ratios  # flushing really changed the map
    assert ratios[False] > bounds[True] - slack  # the slack is needed
    for b in bounds.values():
        for r in ratios.values():
            assert r <= b * TOL, (bounds, ratios)
    print("checked", bounds, ratios)


def test_every_family_bound_holds_with_subnormals_flushed_and_not():
    """Every layer family, with half of its weights' entries planted in the subnormal range: the bound computed with
    flush on and the one computed with flush off each bound the Lipschitz ratio searched with flush on and with
    flush off (fresh process: the flag is per thread)."""
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    code = "import test_flush_denormal as t; t.families_either_mode()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checked") == len(FAMILIES), proc.stdout


def families_either_mode() -> None:
    torch.set_num_threads(1)
    for name, (_, conv) in FAMILIES.items():
        torch.manual_seed(0)
        layer = conv((4, 6, 6)).eval()
        with torch.no_grad():
            for p in layer.parameters():
                if p.dim() > 1 and p.requires_grad:  # half the entries of every weight tensor subnormal
                    mask = torch.rand_like(p) < 0.5
                    p.copy_(torch.where(mask, p.sign() * TINY * torch.rand_like(p) * 0.5, p))
        x = torch.rand(16, 4, 6, 6)
        bounds, ratios = [], []
        for on in (True, False):
            _set(on)
            for m in layer.modules():  # no certified norm cached from the other mode
                if isinstance(m, SpectralConv2d):
                    m._cert = m._scale = None
            bounds.append(float(layer.lipschitz_bound()))
            ratios.append(
                empirical_lipschitz(layer, x, n_pairs=32, ascent_steps=10, generator=torch.Generator().manual_seed(1))
            )
        assert all(r <= b * TOL for b in bounds for r in ratios), (name, bounds, ratios)
        print("checked", name, bounds, ratios)


def test_a_normalised_layer_with_dead_units_is_certified_under_flush(restore_flush):
    """Dead hidden units decay into subnormals (the case that slowed training): with flush on, the eval
    forward applies a weight with no subnormal entry, its bound is the norm cap, and neither the layer nor
    its gradient-flow block is found above its bound."""
    _set(True)
    g = torch.Generator().manual_seed(0)
    op = SpectralConv2d((8, 6, 6), 8, max_norm=1.0, exact=True)
    with torch.no_grad():
        op.weight[:5] *= 2.0**-135  # five of eight rows subnormal
        op.bias[:5] = 2.0**-140
    block = GradientFlowBlock(op, T=1.98, margin=0.01).eval()
    w, bound = op.eval_weight()
    assert bound == 1.0 and op.lipschitz_bound() == 1.0 and block.lipschitz_bound() == 1.0
    applied = w.abs()
    assert ((applied == 0) | (applied >= TINY)).all()  # a flushed entry is a zero
    assert float(op._certify(w)) <= 1.0
    x = torch.rand(16, *op.in_shape, generator=g)
    for f in (lambda v: op(v), block):
        r = empirical_lipschitz(f, x, n_pairs=64, ascent_steps=30, generator=torch.Generator().manual_seed(1))
        assert 0.3 < r <= TOL


def test_the_run_records_the_flag_and_refuses_a_non_boolean(tmp_path, restore_flush):
    base = ["model=nonexpansive", "data=swiss_roll", "debug=fast"]
    for value in (True, False):
        out = tmp_path / str(value)
        train(compose_cfg([*base, f"flush_denormal={str(value).lower()}"], out))
        assert json.loads((out / "results.json").read_text())["flush_denormal"] is value
        assert flushing() is value
    with pytest.raises(ConfigError, match="flush_denormal must be true or false"):
        train(compose_cfg([*base, "flush_denormal=maybe"], tmp_path / "bad"))
    assert not (tmp_path / "bad" / "results.json").exists()
