"""``stablenets-export <run dir>``: a finished run's network as a plain PyTorch program and an ONNX file.

The exported network is the *eval-mode* forward pass with its weights as that pass applies them: every
constrained layer (:class:`~stablenets.nn.SpectralLinear`, :class:`~stablenets.nn.SpectralConv2d`, the
unit-row head) becomes a standard ``nn.Linear`` / ``nn.Conv2d`` holding the scaled weight of
:meth:`~stablenets.nn.spectral.SpectralOperator.eval_weight`, and every gradient-flow block becomes its ``n``
explicit Euler sub-steps ``x ← x − h Aᵀσ(Ax + b)``, ``h = T/n`` (eq. 18), with the eval-mode ``n`` of eq. (19)
(certified norm, ``eval_margin``) — the same operations in the same order, so the logits agree with the
run's model to rounding.  Written to ``<run dir>/export/`` (or ``--out``):

* ``model.pt2`` — a ``torch.export`` program (``torch.export.load(path).module()``; no stablenets class is
  needed to load or run it), dynamic batch size, with ``stablenets.json`` among its extra files;
* ``model.onnx`` — the same program in ONNX (opset of ``torch.onnx``), the metadata as ``metadata_props``;
* ``export.json`` — the metadata and the round-trip checks.

The metadata hold what a user of the deployed model needs to certify its predictions: the certified
Lipschitz bound ``L`` of the whole net, the per-pair constants ``K_ij`` of the logit differences where the
model has them (``certificate=pairwise``), the certificate convention and its radius formula, the clean
accuracy and robustness curve of the run, the input shape and pixel box, and the code version (of the run
and of the export).  The export checks itself on the run's evaluation images (``attack.n_eval`` of the
test set): the largest logit difference of the program and of ONNX Runtime against the run's model, and
the certified accuracy recomputed from the program's logits against the run's curve.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contracts import LipschitzBounded, PairwiseBounded
from ..nn.plain import freeze
from .errors import ConfigError
from .files import write_json

RADIUS = {
    "sqrt2": "(z_y - max_{j != y} z_j) / (sqrt(2) * L)",
    "paper": "(z_y - max_{j != y} z_j) / (2 * L)",
    "pairwise": "min_{j != y} (z_y - z_j) / K[y][j]",
}


def _eval_images(dm, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from ..robustness.curve import take

    return take(dm.test_dataloader(), n, torch.device("cpu"))


def metadata(net: nn.Module, results: dict, cfg, in_shape, box) -> dict[str, Any]:
    """What a deployed model's user needs to certify its predictions (see the module docstring)."""
    from .provenance import provenance

    rob = results.get("robustness") or {}
    convention = rob.get("certificate") or str(cfg.get("certificate", "sqrt2"))
    bound = float(net.lipschitz_bound()) if isinstance(net, LipschitzBounded) else math.inf
    pairwise = net.pairwise_lipschitz().tolist() if isinstance(net, PairwiseBounded) else None
    return {
        "format": "stablenets-export/1",
        "lipschitz_bound": bound if math.isfinite(bound) else None,
        "pairwise_lipschitz": pairwise,
        "certificate": convention,
        "certified_radius": RADIUS.get(convention),
        "clean_accuracy": results["metrics"].get("test/acc"),
        "robustness_curve": rob.get("curve"),
        "n_eval": rob.get("n_eval"),
        "input_shape": list(in_shape),
        "input_box": list(box) if box else None,
        "model": str(cfg.model.get("_target_")),
        "name": results.get("name"),
        "run": {k: results.get(k) for k in ("version", "git_commit", "git_dirty", "run_id")},
        "export": provenance(),
    }


#: relative tolerance between the bound recomputed from the checkpoint and the run's: the float32 rounding of maps
#: built in the Fourier domain (FFTs, solves) depends on the thread count, at ~1e-7 relative
BOUND_RTOL = 1e-5


def export(run_dir: str | Path, output_dir: str | Path | None = None, n_check: int | None = None) -> dict[str, Any]:
    """Export a finished run (see the module docstring); return ``export.json``'s content plus the paths.

    ``n_check``: images of the test set the round trip is checked on (default: the run's ``attack.n_eval``).
    The files are written into a temporary folder beside the destination and moved into place together at the
    end: an export that fails leaves no half-written folder and keeps an earlier export as it was.
    """
    from ..eval import load_run

    run_dir = Path(run_dir)
    cfg, objects = load_run(run_dir)  # a finished run, its checkpoint the one its results.json reports on
    results = objects["results"]
    net, dm = objects["task"].net.cpu().eval(), objects["datamodule"]
    if any(not math.isfinite(float(p.detach().abs().max())) for p in net.parameters() if p.numel()):
        raise ConfigError(f"{run_dir}/checkpoints/last.ckpt holds non-finite weights: nothing to export")
    in_shape = tuple(dm.in_shape)
    meta = metadata(net, results, cfg, in_shape, getattr(dm, "box", None))
    reported = results["metrics"].get("test/lipschitz_bound")
    if reported is not None and not math.isclose(meta["lipschitz_bound"] or math.inf, reported, rel_tol=BOUND_RTOL):
        raise ConfigError(
            f"the checkpoint's certified bound {meta['lipschitz_bound']} differs from the run's {reported} "
            f"({run_dir}/results.json) by more than {BOUND_RTOL:g} relative: the checkpoint is not the one the run "
            "reported on"
        )
    n = n_check or meta["n_eval"] or (cfg.attack.get("n_eval") if cfg.get("attack") else None) or 256
    x, y = _eval_images(dm, int(n))
    out = Path(output_dir) if output_dir else run_dir / "export"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ConfigError(f"cannot write the export to {out}: {e.strerror or e}; choose another --out") from None
    try:
        report = _write_export(net, cfg, meta, x, y, work, run_dir)
        onnx = str(out / "model.onnx") if report["onnx"] else None
        report["files"] = {"program": str(out / "model.pt2"), "onnx": onnx}
        write_json(work / "export.json", report)
        _replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _write_export(net: nn.Module, cfg, meta: dict, x: torch.Tensor, y: torch.Tensor, work: Path, run_dir: Path) -> dict:
    """``model.pt2`` and ``model.onnx`` of ``net`` into ``work``, with the round-trip checks (``export.json``'s
    content; ``onnx`` says whether ONNX was written, or why not)."""
    from ..robustness.certify import certified_accuracy

    frozen = freeze(net)
    example = x[:2]
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(frozen, (example,), dynamic_shapes=({0: batch},))
    except Exception as e:  # a model whose forward torch.export cannot trace
        raise ConfigError(
            f"cannot export the model of {run_dir} ({cfg.model.get('_target_')}) with torch.export: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    with torch.no_grad():
        ref, frozen_logits = net(x), frozen(x)
        exported = program.module()(x)
    checks: dict[str, Any] = {
        "n_images": len(x),
        "max_abs_logit_diff_frozen": float((frozen_logits - ref).abs().max()),
        "max_abs_logit_diff_program": float((exported - ref).abs().max()),
    }
    bound = eps = None
    if meta["robustness_curve"] and meta["n_eval"] == len(x):
        bound = meta["pairwise_lipschitz"] if meta["certificate"] == "pairwise" else meta["lipschitz_bound"]
        if bound is not None:
            eps = [row["eps"] for row in meta["robustness_curve"]]
            checks["certified_acc_run"] = [row["certified_acc"] for row in meta["robustness_curve"]]
            checks["certified_acc_exported"] = certified_accuracy(exported, y, bound, eps, meta["certificate"])
    torch.export.save(program, str(work / "model.pt2"), extra_files={"stablenets.json": json.dumps(meta)})
    try:
        _export_onnx(program, example, work / "model.onnx", meta)
    except Exception as e:  # an operation ONNX has no form for: the program stands without it
        (work / "model.onnx").unlink(missing_ok=True)
        onnx = f"not written: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return {**meta, "checks": checks, "onnx": None, "onnx_error": onnx}
    import onnxruntime as ort

    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    ort_logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    checks["max_abs_logit_diff_onnxruntime"] = float((ort_logits - ref).abs().max())
    if "certified_acc_exported" in checks:
        checks["certified_acc_onnxruntime"] = certified_accuracy(ort_logits, y, bound, eps, meta["certificate"])
    if not y.is_floating_point():  # a classifier's labels
        checks["clean_acc_exported"] = float((exported.argmax(1) == y).float().mean())
        checks["clean_acc_onnxruntime"] = float((ort_logits.argmax(1) == y).float().mean())
    return {**meta, "checks": checks, "onnx": True}


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``, an earlier ``out`` set aside first and removed after."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        if out.exists():
            os.replace(out, old)
        os.replace(new, out)
    except OSError as e:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise ConfigError(f"cannot write the export to {out}: {e.strerror or e}; choose another --out") from None
    shutil.rmtree(old, ignore_errors=True)


def _export_onnx(program, example: torch.Tensor, path: Path, meta: dict) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    onnx_program = torch.onnx.export(
        program,
        (example,),
        dynamic_shapes=({0: batch},),
        dynamo=True,
        input_names=["x"],
        output_names=["logits"],
        verbose=False,
    )
    onnx_program.save(str(path))
    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(module, metadata)`` of a ``model.pt2`` written by :func:`export` (plain ``torch.export``: the same as
    ``torch.export.load(path, extra_files=...)`` without this package)."""
    extra = {"stablenets.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra["stablenets.json"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stablenets-export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="output folder (default: <run dir>/export)")
    parser.add_argument("--n-check", type=int, help="test images for the round-trip check (default: attack.n_eval)")
    args = parser.parse_args(argv)
    try:
        rep = export(args.run_dir, args.out, args.n_check)
    except ConfigError as e:
        print(f"stablenets-export: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(summary(rep))


def summary(rep: dict) -> str:
    """The lines ``stablenets-export`` prints: the files, the bound, and the round trip as measured."""
    c = rep["checks"]
    files = rep["files"]["program"] + (f", {rep['files']['onnx']}" if rep["files"]["onnx"] else "")
    lines = [f"stablenets-export: {files}"]
    if rep["lipschitz_bound"] is not None:
        bound = f"  bound L={rep['lipschitz_bound']} ({rep['certificate']}: radius {rep['certified_radius']}), "
    else:
        bound = "  no certified bound (the model has no Lipschitz bound), "
    lines.append(bound + f"clean acc {rep['clean_accuracy']}")
    trip = f"  on {c['n_images']} test images: max |logit diff| program {c['max_abs_logit_diff_program']:.3g}"
    if "max_abs_logit_diff_onnxruntime" in c:
        trip += f", ONNX Runtime {c['max_abs_logit_diff_onnxruntime']:.3g}"
    if "certified_acc_exported" in c:
        same = "=" if c["certified_acc_exported"] == c["certified_acc_run"] else "differs from"
        trip += f"; certified acc run {c['certified_acc_run']} {same} exported {c['certified_acc_exported']}"
    lines.append(trip)
    if not rep.get("onnx"):
        lines.append(f"  warning: ONNX {rep.get('onnx_error')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
