"""Speed of the Figure 14 protocol, as ratios measured in one run on this machine.

    python scripts/benchmark.py                                    # 5,000 images, 2 epochs, PGD-20 on 200 images
    python scripts/benchmark.py --n-train 30000 --epochs 30 --n-eval 1000 --n-iter 100   # the full protocol
    python scripts/benchmark.py --runs outputs/sweeps/fig14/*      # attack only: finished runs' checkpoints

Both models come from the presets ``experiment=fmnist_nonexpansive`` and ``experiment=fmnist_resnet`` (same
data, schedule, loss and callbacks as ``stablenets-train``).  Prints:

* training: mean epoch time of the non-expansive net / its ResNet twin, images/s of both, the share of the
  non-expansive epoch spent in ``PowerMethodCallback``, the mean and max sub-step count per block;
* attack: the robustness curve as ``stablenets-train`` computes it (all ε in one batch, chunks of
  ``attack.chunk_size`` rows, certified pairs skipped, only correctly classified points, early stop,
  monotone in ε) against the plain evaluation (one ε at a time, every point, every iteration), once with
  all points in one batch and once in the same chunks and memory layout; with both curves, so that the fast
  one can be checked to be equal or stronger.

Needs the Fashion-MNIST files (``data.data_dir``, ``/usr/share/datasets/fashion-mnist``, or ``--download``).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import lightning as pl
import torch
from omegaconf import OmegaConf

from stablenets.callbacks import PowerMethodCallback
from stablenets.nn import GradientFlowBlock
from stablenets.eval import load_run
from stablenets.robustness import pgd_l2_plain, robustness_curve
from stablenets.robustness.curve import chunk_for, take
from stablenets.api import compose
from stablenets.runner.config import build_objects, without_hydra

PRESETS = {"nonexpansive": "fmnist_nonexpansive", "resnet": "fmnist_resnet"}


class TimedPowerMethod(PowerMethodCallback):
    """The runner's callback, timed: seconds spent in its per-step update, updates, and the sub-step count of
    every gradient-flow block after each update."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds, self.updates, self.substeps = 0.0, 0, []

    def update(self, module) -> None:
        t0 = time.perf_counter()
        super().update(module)
        self.seconds += time.perf_counter() - t0
        self.updates += 1
        self.substeps += [b.n_steps for b in module.modules() if isinstance(b, GradientFlowBlock)]


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._t)


def train(preset: str, overrides: list[str], accelerator: str = "cpu"):
    # the run-dir keys need a value; nothing is written there
    cfg = without_hydra(compose([f"experiment={preset}", *overrides], output_dir=tempfile.gettempdir()))
    objects = build_objects(cfg)
    power_cfg = {k: v for k, v in cfg.callbacks.power_method.items() if k != "_target_"}
    timer, power = EpochTimer(), TimedPowerMethod(**power_cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, callbacks=[timer, power], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator=accelerator, devices=1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(objects["task"], datamodule=objects["datamodule"])
    return cfg, objects, timer, power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-eval", type=int, default=None, help="attacked images (default: 200; --runs: the run's own)")
    ap.add_argument("--n-iter", type=int, default=None, help="PGD iterations (default: 20; --runs: the run's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--runs", nargs="*", help="finished run dirs (non-expansive first): attack their checkpoints")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train and attack")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        ap.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    models = {}
    if args.runs:
        for name, run in zip(PRESETS, args.runs):
            cfg, objects = load_run(run)
            models[name] = (cfg, objects)
    else:
        stats = {}
        args.n_eval, args.n_iter = args.n_eval or 200, args.n_iter or 20
        data = [f"data.n_train={args.n_train}", f"data.n_test={args.n_eval}", f"trainer.max_epochs={args.epochs}",
                f"data.download={args.download}", "attack=pgd_l2"]
        for name, preset in PRESETS.items():
            cfg, objects, timer, power = train(preset, data, "gpu" if device.type == "cuda" else "cpu")
            models[name] = (cfg, objects)
            ep = sum(timer.times) / len(timer.times)
            stats[name] = (ep, power)
            print(f"[train] {name:13s} mean epoch {ep:7.2f} s  ({args.n_train / ep:7.0f} images/s)  "
                  f"epochs: {', '.join(f'{t:.1f}' for t in timer.times)}")
        ep_ne, power = stats["nonexpansive"]
        n = power.substeps or [0]
        print(f"[train] mean epoch time nonexpansive / resnet = {ep_ne / stats['resnet'][0]:.2f}")
        print(f"[train] PowerMethodCallback share of the non-expansive epochs = "
              f"{power.seconds / (ep_ne * args.epochs):.2%} "
              f"({power.iterations / max(1, power.updates):.2f} iterations per layer and step, {power.projections} projections)")
        print(f"[train] sub-steps n per block: mean {sum(n) / len(n):.2f}, max {max(n)}")

    for name, (cfg, objects) in models.items():
        net = objects["net"].to(device).eval()
        attack = OmegaConf.to_container(cfg.attack, resolve=True)
        attack.update({k: v for k, v in (("n_iter", args.n_iter), ("n_eval", args.n_eval)) if v})
        attack["audit"] = 0  # the certificate audit checks bounds; it is not part of the curve's work
        loader = objects["datamodule"].test_dataloader()
        x, y = take(loader, attack["n_eval"], device)
        t0 = time.perf_counter()
        curve = robustness_curve(net, loader, attack, box=(0.0, 1.0))
        t_fast = time.perf_counter() - t0
        fast = [r["pgd_acc"] for r in curve["curve"]]
        eps, n_iter = attack["eps"], attack["n_iter"]
        t0 = time.perf_counter()
        plain = pgd_l2_plain(net, x, y, eps, n_iter=n_iter)
        t_plain = time.perf_counter() - t0
        chunk = chunk_for(device, attack.get("chunk_size", "auto"))
        t0 = time.perf_counter()
        plain_chunked = pgd_l2_plain(net, x, y, eps, n_iter=n_iter, chunk_size=chunk, layout=True)
        t_chunked = time.perf_counter() - t0
        plain_passes = len(x) * n_iter * sum(e > 0 for e in eps)
        worse = max(a - b for a, b in zip(fast, plain))
        print(f"[attack] {name:13s} curve {t_fast:7.1f} s ({curve['pgd_passes']} image passes) vs plain {t_plain:7.1f} s "
              f"({plain_passes} passes): {t_plain / t_fast:.1f}x; vs plain in chunks of {chunk} + layout {t_chunked:7.1f} s: "
              f"{t_chunked / t_fast:.1f}x; max(curve - plain accuracy) = {worse:+.3f} (<= 0: equal or stronger)")
        print(f"[attack] {name:13s} eps      " + " ".join(f"{e:6.3f}" for e in eps))
        print(f"[attack] {name:13s} curve    " + " ".join(f"{a:6.3f}" for a in fast))
        print(f"[attack] {name:13s} plain    " + " ".join(f"{a:6.3f}" for a in plain))
        print(f"[attack] {name:13s} chunked  " + " ".join(f"{a:6.3f}" for a in plain_chunked))
        if curve["curve"][0]["certified_acc"] is not None:
            print(f"[attack] {name:13s} certified" + " ".join(f"{r['certified_acc']:6.3f}" for r in curve["curve"])
                  + f"   (Lipschitz bound {curve['lipschitz_bound']:.3f})")


if __name__ == "__main__":
    main()
