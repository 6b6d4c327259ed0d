"""``stablenets-export``: the exported program and ONNX file compute the run's logits, carry its certificate, and
the bound in their metadata is still an upper bound of the exported function (searched, not trusted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from problems import GROUP_OPTIONS, LAYER_OPTIONS, compose_cfg
from stablenets.api import compose, export, train
from stablenets.contracts import Exportable
from stablenets.nn.gradient_flow import FlowSteps
from stablenets.nn.layers.fourier import FourierLayer
from stablenets.nn.plain import freeze
from stablenets.robustness.certify import certified_radius

# its module-scoped fixture is built once, on one worker (pytest -n 2 runs with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_export")

RUNS = {
    # dense gradient-flow blocks with several eval-mode sub-steps (T=4), a prescribed L, the sqrt2 certificate
    "dense": [
        "model=nonexpansive",
        "model.depth=2",
        "model.width=8",
        "model.T=4",
        "lipschitz=bound",
        "lipschitz.L=2",
        "trainer.max_epochs=3",
        "data.n_test=200",
        "attack=pgd_l2",
        "attack.eps=[0,0.1,0.3]",
        "attack.n_iter=10",
        "attack.n_eval=200",
    ],
    # convolutional blocks, pixel unshuffle, MaxMin, unit-row head: per-pair certificates; 8 steps (~37% accuracy:
    # the adversarial search needs correctly classified points)
    "certified": [
        "experiment=fmnist_certified",
        "model.channels=[8,16]",
        "model.blocks=[1,1]",
        "model.hidden=[8,16]",
        "model.project_channels=8",
        "model.dense=16",
        "data.n_train=512",
        "data.n_test=64",
        "trainer.max_epochs=2",
        "attack.n_eval=64",
        "attack.n_iter=5",
        "attack.eps=[0,0.05,0.1]",
    ],
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def exported(request, tmp_path_factory):
    run = tmp_path_factory.mktemp(request.param) / "run"
    cfg = compose([*RUNS[request.param], "progress=none", "num_threads=1"], output_dir=run)
    _, objects = train(cfg)
    report = export(run)
    return run, report, objects


def test_exported_logits_and_certificate_equal_the_runs(exported):
    run, report, objects = exported
    results = json.loads((run / "results.json").read_text())
    checks = report["checks"]
    assert checks["n_images"] == results["robustness"]["n_eval"]
    assert checks["max_abs_logit_diff_program"] <= 1e-5
    assert checks["max_abs_logit_diff_onnxruntime"] <= 1e-5
    assert checks["certified_acc_exported"] == checks["certified_acc_run"]
    assert checks["certified_acc_onnxruntime"] == pytest.approx(checks["certified_acc_run"], abs=2 / checks["n_images"])
    assert checks["certified_acc_run"] == [p["certified_acc"] for p in results["robustness"]["curve"]]
    assert report["lipschitz_bound"] == results["metrics"]["test/lipschitz_bound"]
    assert report["clean_accuracy"] == results["metrics"]["test/acc"]
    assert report["run"]["git_commit"] == results["git_commit"] and report["export"]["version"]
    if report["certificate"] == "pairwise":
        K = torch.tensor(report["pairwise_lipschitz"])
        assert K.shape == (10, 10) and torch.equal(K, objects["net"].pairwise_lipschitz().float().double())
    else:  # the dense run: the blocks' eval-mode sub-step loops are in the program, as in the model
        steps = [b.n_steps for b in objects["net"].layers]
        assert max(steps) > 1


LOADER = r"""
import json, sys
import numpy as np, onnx, onnxruntime as ort, torch
path, data = sys.argv[1], torch.load(sys.argv[2])
extra = {"stablenets.json": ""}
net = torch.export.load(path + "/model.pt2", extra_files=extra).module()
meta = json.loads(extra["stablenets.json"])
onnx_meta = {p.key: json.loads(p.value) for p in onnx.load(path + "/model.onnx").metadata_props}
s = ort.InferenceSession(path + "/model.onnx", providers=["CPUExecutionProvider"])
ort_logits = torch.from_numpy(s.run(None, {s.get_inputs()[0].name: data["x"].numpy()})[0])
print(json.dumps({"program": float((net(data["x"]) - data["logits"]).abs().max()),
                  "onnx": float((ort_logits - data["logits"]).abs().max()),
                  "same_meta": onnx_meta == meta, "bound": meta["lipschitz_bound"],
                  "stablenets_loaded": any(m.startswith("stablenets") for m in sys.modules)}))
"""


def test_exported_files_load_and_run_without_the_package(exported, tmp_path):
    run, report, objects = exported
    x = torch.rand(7, *report["input_shape"])  # a batch size the export never saw
    with torch.no_grad():
        logits = objects["net"].eval()(x)
    torch.save({"x": x, "logits": logits}, tmp_path / "data.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(run / "export"), str(tmp_path / "data.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["stablenets_loaded"]
    assert out["program"] <= 1e-5 and out["onnx"] <= 1e-5
    assert out["same_meta"] and out["bound"] == report["lipschitz_bound"]


def _load(run):
    from stablenets.runner.export import load_exported

    return load_exported(run / "export" / "model.pt2")


def _pgd_within(net, x, y, radius, steps=60):
    """Margin-loss PGD on each point's own L2 ball of radius ``radius`` (no box: the certificate holds on R^d)."""
    delta = torch.zeros_like(x, requires_grad=True)
    r = radius.view(-1, *[1] * (x.dim() - 1)).to(x.dtype)
    for _ in range(steps):
        z = net(x + delta)
        other = z.clone()
        other[torch.arange(len(y)), y] = -torch.inf
        margin = z[torch.arange(len(y)), y] - other.amax(1)
        (g,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r)
            delta -= 2.5 * r / steps * g
            norm = delta.flatten(1).norm(dim=1).view_as(r)
            delta *= torch.where(norm > r, r / norm.clamp_min(1e-30), torch.ones_like(norm))
    with torch.no_grad():
        z = net(x + delta)
    return z.argmax(1) == y


def test_exported_bound_is_an_upper_bound_by_adversarial_search(exported):
    run, report, objects = exported
    net, meta = _load(run)
    dm = objects["datamodule"]
    x, y = next(iter(dm.test_dataloader()))
    x, y = x[:64], y[:64]
    with torch.no_grad():
        logits = net(x)
    K = torch.tensor(meta["pairwise_lipschitz"]) if meta["certificate"] == "pairwise" else meta["lipschitz_bound"]
    radius = certified_radius(logits, K, meta["certificate"])
    correct = logits.argmax(1) == y
    assert correct.sum() > 5
    xs, ys, rs = x[correct], y[correct], radius[correct]
    # inside its certified radius no point is broken ...
    assert _pgd_within(net, xs, ys, rs).all()
    # ... while the same attack at 30x the radius breaks some: the search has teeth
    assert not _pgd_within(net, xs, ys, 30 * rs).all()

    # gradient ascent on |f(a) - f(b)| / |a - b| stays below L (and below K_ij for each logit difference)
    L = meta["lipschitz_bound"]
    torch.manual_seed(0)
    a = (x[:32] + 0.05 * torch.randn_like(x[:32])).requires_grad_(True)
    b = (x[:32] + 0.05 * torch.randn_like(x[:32])).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=1e-2)
    best = 0.0
    for _ in range(100):
        ratio = (net(a) - net(b)).norm(dim=1) / (a - b).flatten(1).norm(dim=1).clamp_min(1e-9)
        best = max(best, float(ratio.max().detach()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    assert 0 < best <= L * (1 + 1e-5)
    if meta["certificate"] == "pairwise":
        with torch.no_grad():
            za, zb = net(a), net(b)
            d = (a - b).flatten(1).norm(dim=1)
            diff = (za[:, :, None] - za[:, None, :]) - (zb[:, :, None] - zb[:, None, :])
            assert (diff.abs() <= K[None] * d[:, None, None] * (1 + 1e-5) + 1e-7).all()


def test_export_cli_errors_are_one_paragraph(tmp_path, capsys):
    from stablenets.runner.export import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is not a run dir" in err and "Traceback" not in err


# the arguments the data module and the runner give each model config: (input shape, output size, extra)
MODEL_ARGS = {
    "nonexpansive": ((2,), 2, {"L": 2.0}),
    "conv_nonexpansive": ((1, 28, 28), 10, {}),
    "certified_conv": ((1, 28, 28), 10, {}),
    "conv_resnet": ((1, 28, 28), 10, {}),
    "hnn": ((2,), 2, {}),
    "hnn_euler": ((2,), 2, {}),
    "mlp": ((2,), 2, {}),
    "resnet": ((2,), 2, {}),
    "invnet": ((4,), 4, {"L": 1.0}),
    "contracting": ((2,), 2, {}),
    "lyapunov": ((2,), 2, {}),
    "vector_field_mlp": ((2,), 2, {}),
    "lipconvnet": ((1, 28, 28), 10, {}),
}
# every model config, and LipConvNet with every layer family (a small one: width 4, one layer per block)
MODELS = GROUP_OPTIONS["model"] + [f"lipconvnet/{layer}" for layer in LAYER_OPTIONS]
SMALL_LIPCONVNET = ["model.base_width=4", "model.layers=1"]


def test_every_model_config_has_export_arguments():
    assert set(GROUP_OPTIONS["model"]) == set(MODEL_ARGS)


def _model(name: str, tmp_path) -> tuple[torch.nn.Module, tuple[int, ...]]:
    from hydra.utils import instantiate

    config, _, layer = name.partition("/")
    in_shape, out_dim, extra = MODEL_ARGS[config]
    overrides = [f"model={config}"] + ([f"model/layer={layer}", *SMALL_LIPCONVNET] if layer else [])
    node = compose_cfg(overrides, tmp_path).model
    torch.manual_seed(0)
    return instantiate(node, in_shape=in_shape, out_dim=out_dim, **extra, _convert_="all").eval(), in_shape


@pytest.mark.parametrize("model", MODELS)
def test_freeze_computes_the_eval_forward_of_every_model(model, tmp_path):
    """The frozen copy (plain layers, sub-step loops) computes the eval-mode model — bit for bit where it
    applies the same operations, to 1e-6 where a Fourier-domain family's DFTs become real matrix products —
    no constrained part is left in it, and torch.export traces it."""
    net, in_shape = _model(model, tmp_path)
    with torch.no_grad():  # weights far from their initial norms: the eval-mode scales and sub-step counts matter
        for p in net.parameters():
            p.mul_(3.0)
    x = torch.rand(5, *in_shape)
    frozen = freeze(net)
    assert not [m for m in frozen.modules() if isinstance(m, Exportable)]
    with torch.no_grad():
        ref = net(x)
        out = frozen(x)
    fourier = any(isinstance(m, FourierLayer) for m in net.modules())
    if fourier:
        assert (out - ref).abs().max() <= 1e-6 * max(1.0, float(ref.abs().max()))
    else:
        assert torch.equal(out, ref)
    if model == "lyapunov":  # its forward differentiates V (autograd.grad), which torch.export cannot trace
        return
    with torch.no_grad():
        program = torch.export.export(frozen, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        assert (program.module()(x) - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    blocks = [m for m in frozen.modules() if isinstance(m, FlowSteps)]
    if model in ("nonexpansive", "conv_nonexpansive"):
        assert blocks and max(b.n for b in blocks) > 1  # the eval-mode sub-step loop is exported as a loop
    if model.startswith("lipconvnet/"):  # every layer family goes through ONNX and runs in ONNX Runtime
        import onnxruntime as ort

        from stablenets.runner.export import _export_onnx

        _export_onnx(program, x[:2], tmp_path / "model.onnx", {"family": model})
        session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        assert (logits - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
