"""``stablenets-eval <run dir> [overrides]``: re-evaluate a finished run from its saved config and checkpoint.

The evaluation model is rebuilt from the run's own composed config (its ``.hydra/overrides.yaml``) plus the
new overrides — e.g. ``attack=autoattack_l2`` or ``attack.n_iter=500`` — and the weights (including the
power-method buffers) come from ``checkpoints/last.ckpt``.  Results go to ``<run dir>/eval/<time>/``.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from .errors import ConfigError
from .reporting import results_part, write_report
from .train import CONF_DIR, build_objects, report, write_json


def load_run(run_dir: str | Path, overrides: list[str] = ()):
    """``(cfg, objects)`` of a finished run with its checkpoint loaded, net in eval mode."""
    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "overrides.yaml"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not saved.exists():
        raise ConfigError(f"{run_dir} is not a run dir: {saved} is missing")
    if not ckpt.exists():
        raise ConfigError(f"{run_dir} has no checkpoint at {ckpt}")
    base = yaml.safe_load(saved.read_text()) or []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=False)
    saved_cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    with open_dict(cfg):  # no Hydra runtime here: take the resolved names from the run
        cfg.paths.output_dir = str(run_dir)
        cfg.name = saved_cfg.get("name", run_dir.name)
        cfg.group = saved_cfg.get("group", cfg.name)
    objects = build_objects(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    objects["task"].load_state_dict(state)
    objects["task"].eval()
    objects["datamodule"].setup("test")
    return cfg, objects


def eval_device(overrides: list[str] = ()) -> torch.device:
    """``trainer.accelerator`` among the overrides (``auto`` by default, whatever the run trained on)."""
    choice = "auto"
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "trainer.accelerator":
            choice = value
    if choice not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator must be auto, cpu or gpu for stablenets-eval, got {choice!r}")
    if choice in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is available")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def new_eval_dir(run_dir: Path) -> Path:
    """``<run>/eval/<time to the microsecond>``, created exclusively: two evaluations never share a dir."""
    while True:
        out = run_dir / "eval" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        try:
            out.mkdir(parents=True, exist_ok=False)
            return out
        except FileExistsError:
            continue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stablenets-eval", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. attack=autoattack_l2 attack.n_iter=200")
    args = parser.parse_args(argv)
    try:
        device = eval_device(args.overrides)
        cfg, objects = load_run(args.run_dir, args.overrides)
    except ConfigError as e:
        print(f"stablenets-eval: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = new_eval_dir(Path(args.run_dir))
    task, dm = objects["task"].to(device), objects["datamodule"]
    evaluation = task.evaluate(dm, cfg)
    write_report(evaluation, out, dm, task.net, title=str(cfg.get("name", "")))
    write_json(out / "results.json", {**results_part(evaluation), "overrides": args.overrides, "device": str(device)})
    report(evaluation["metrics"], out, evaluation)
    violations = int(evaluation["metrics"].get("test/certificate_violations", 0))
    if violations:
        print(f"stablenets-eval: error: the certificate audit broke {violations} certified pairs: a bound is wrong",
              file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
