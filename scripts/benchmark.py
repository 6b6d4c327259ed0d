"""Speed of the Fashion-MNIST presets, as ratios measured in one run on this machine.

    python scripts/benchmark.py                                    # 5,000 images, 2 epochs, PGD-20 on 200 images
    python scripts/benchmark.py --n-train 30000 --epochs 30 --n-eval 1000 --n-iter 100   # the full protocol
    python scripts/benchmark.py --runs outputs/sweeps/fig14/*      # attack only: finished runs' checkpoints
    python scripts/benchmark.py --only epochs peer --n-train 30000 --epochs 1 --threads 1   # what users feel
    python scripts/benchmark.py --only epochs --late-state fmnist_certified=RUN/checkpoints/last.ckpt
    python scripts/benchmark.py --only peer --certified model.blocks=[2,2]      # a variant of the certified net

The models come from the presets ``experiment=fmnist_nonexpansive``, ``fmnist_resnet`` and ``fmnist_certified``
(same data, schedule, loss and callbacks as ``stablenets-train``; subnormals flushed to zero as the runner does,
``--no-flush`` to see the difference).  Sections (``--only``, default all):

* ``epochs``: per-epoch time over a preset run, as the ratio of the slowest epoch to the first, for
  ``fmnist_certified`` and ``fmnist_nonexpansive``.  A run reaches its late regime only after thousands of
  steps (weights that get no gradient decay under weight decay, into the subnormal float range after about 13
  epochs of the certified preset), so the run is ``--epochs`` epochs from the start and then one epoch from a
  *late state*: a run's checkpoint (``--late-state PRESET=PATH``) or, by default, the state aged as the
  epoch-13 checkpoint of the certified preset was found: in every gradient-flow block, 9 of 16 hidden units
  dead (bias < 0) with their rows of ``A`` decayed into the subnormal range;
* ``peer``: the certified net's epoch time against a deel-torchlip-shaped net (its Fashion-MNIST tutorial
  network from this package's layers: normalised spectral convolutions 1→16, 16→32 with GroupSort2 and L2-norm
  pooling, a normalised dense 1568→64, GroupSort2, a normalised dense head; HKR loss α = 0.99, margin 0.25,
  Adam 1e-3, batch 100; 106k parameters), same data, threads, callbacks and per-epoch validation;
* ``ne`` (Figure 14) and ``attack`` below.

``ne`` and ``attack`` print:

* training: mean epoch time of the non-expansive net / its ResNet twin, images/s of both, the share of the
  non-expansive epoch spent in ``PowerMethodCallback`` (all of its per-step work: update, periodic lag
  check, logging; and its update alone), the mean and max sub-step count per block,
  and, between real training steps of the trained net, the update against the two single-image products per
  layer that one iteration cannot do without (its floor).

``ne`` and ``peer`` train each of their two nets ``--rounds`` times in turns (A B A B), each time from scratch:
the speed of a shared machine drifts by 20-30% over minutes, and a ratio of two runs made one after the
other measures the drift as much as the nets.
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
from torch import nn

from stablenets.api import compose
from stablenets.callbacks import PowerMethodCallback
from stablenets.eval import load_run
from stablenets.losses import HKR
from stablenets.nn import GradientFlowBlock, SpectralConv2d, SpectralLinear
from stablenets.nn.activations import GroupSort
from stablenets.nn.bounds import lipschitz_bound
from stablenets.nn.isometries import L2Pool2d
from stablenets.robustness import pgd_l2_per_eps, robustness_curve
from stablenets.robustness.curve import chunk_for, take
from stablenets.runner.config import build, build_objects, without_hydra
from stablenets.runner.numerics import flush_denormals

PRESETS = {"nonexpansive": "fmnist_nonexpansive", "resnet": "fmnist_resnet"}
EPOCH_PRESETS = ("fmnist_certified", "fmnist_nonexpansive")
SECTIONS = ("ne", "attack", "epochs", "peer")
#: the deel-torchlip tutorial's training settings, on the certified preset's data and schedule
PEER = ["data.batch_size=100", "task.optimizer.lr=1e-3"]  # and its loss: HKR(alpha=0.99, min_margin=0.25)


class PeerNet(nn.Sequential):
    """deel-torchlip's Fashion-MNIST tutorial network (106k parameters) from this package's layers (its
    GroupSort2 pairs channel i with i + C/2, as deel-torchlip's does); its bound comes from the same per-part
    rules as every model's (``stablenets.nn.bounds``)."""

    def __init__(self, in_shape=(1, 28, 28), out_dim: int = 10) -> None:
        c, h, w = in_shape
        super().__init__(
            SpectralConv2d((c, h, w), 16, 3, max_norm=1.0, exact=True),
            GroupSort(2, "halves"),
            L2Pool2d(2),
            SpectralConv2d((16, h // 2, w // 2), 32, 3, max_norm=1.0, exact=True),
            GroupSort(2, "halves"),
            L2Pool2d(2),
            nn.Flatten(),
            SpectralLinear(32 * (h // 4) * (w // 4), 64, max_norm=1.0, exact=True),
            GroupSort(2, "halves"),
            SpectralLinear(64, out_dim, max_norm=1.0, exact=True),
        )
        self.in_shape = tuple(in_shape)

    def lipschitz_bound(self) -> float:
        return lipschitz_bound(list(self), self.in_shape, "peer")


def peer_net(in_shape=(1, 28, 28), out_dim: int = 10) -> PeerNet:
    return PeerNet(in_shape, out_dim)


def subnormals(tensors) -> int:
    """How many float32 values are subnormal, read from their bits (under flush-to-zero a comparison reads a
    subnormal as 0)."""
    n = 0
    for t in tensors:
        if t.dtype == torch.float32:
            bits = t.detach().reshape(-1).view(torch.int32)
            n += int(((bits & 0x7F800000) == 0).logical_and_((bits & 0x007FFFFF) != 0).sum())
    return n


@torch.no_grad()
def age(objects, dead: float = 9 / 16, seed: int = 0) -> int:
    """The late-training regime of the epoch-13 certified checkpoint: in every gradient-flow block a share
    ``dead`` of the hidden units is dead (bias -0.1: no gradient but weight decay) and their rows of ``A``
    have decayed into the subnormal range (random subnormals, ± up to 2^-126).  Returns the number of subnormal
    weights."""
    g = torch.Generator().manual_seed(seed)
    for block in objects["net"].modules():
        if isinstance(block, GradientFlowBlock):
            w = block.op.weight
            rows = torch.randperm(len(w), generator=g)[: round(dead * len(w))]
            shape = w[rows].shape  # subnormals written bitwise: arithmetic would flush them to zero
            bits = torch.randint(1, 1 << 23, shape, generator=g, dtype=torch.int32)
            sign = torch.randint(0, 2, shape, generator=g, dtype=torch.int32) * torch.iinfo(torch.int32).min
            w[rows] = (bits | sign).view(torch.float32)
            block.op.bias[rows] = -0.1
    return subnormals(objects["net"].parameters())


def load_late_state(objects, path: str) -> int:
    """A run's checkpoint (Lightning ``.ckpt``) or a ``{"net": state_dict}`` file into the net; returns the
    number of subnormal weights it holds."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" in state:
        objects["task"].load_state_dict(state["state_dict"])
    else:
        objects["net"].load_state_dict(state["net"])
    return subnormals(objects["net"].parameters())


class TimedPowerMethod(PowerMethodCallback):
    """The runner's callback, timed: ``seconds`` is all of its per-step work (the update, the periodic check
    against the certified bounds and its corrections, logging), ``update_seconds`` the update alone; the number
    of updates and the sub-step count of every gradient-flow block after each update."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds, self.update_seconds, self.updates, self.substeps = 0.0, 0.0, 0, []

    def on_train_batch_end(self, *args, **kwargs) -> None:
        t0 = time.perf_counter()
        super().on_train_batch_end(*args, **kwargs)
        self.seconds += time.perf_counter() - t0

    def update(self, module) -> None:
        t0 = time.perf_counter()
        super().update(module)
        self.update_seconds += time.perf_counter() - t0
        self.updates += 1
        self.substeps += [b.n_steps for b in module.modules() if isinstance(b, GradientFlowBlock)]


class EpochTimer(pl.Callback):
    """Wall time of each epoch, from its start to the next one's (its validation included, when it runs), and
    the CPU time of the process over it (``cpu``: on a shared machine the wall time also counts the waits for a
    core; the CPU time is the work, as long as torch keeps to its threads)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._t: tuple[float, float] | None = None

    def _lap(self) -> None:
        now = time.perf_counter(), time.process_time()
        if self._t is not None:
            self.times.append(now[0] - self._t[0])
            self.cpu.append(now[1] - self._t[1])
        self._t = now

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._lap()

    def on_train_end(self, trainer, pl_module) -> None:
        self._lap()


def train(
    preset: str, overrides: list[str], accelerator: str = "cpu", net=None, loss=None, prepare=None, validate=False
):
    """Train a preset as ``stablenets-train`` does (its data, net, task, schedule, power-method callback);
    ``net`` and ``loss`` replace the preset's, ``prepare(objects)`` runs before training, ``validate`` keeps
    the per-epoch validation of a real run (in the epoch times)."""
    # the run-dir keys need a value; nothing is written there
    cfg = without_hydra(compose([f"experiment={preset}", *overrides], output_dir=tempfile.gettempdir()))
    objects = build_objects(cfg)
    if net is not None:
        objects.update(net=net, task=build("task", cfg.task, net=net, **({"loss": loss} if loss else {})))
    if prepare is not None:
        prepare(objects)
    power_cfg = {k: v for k, v in cfg.callbacks.power_method.items() if k != "_target_"}
    timer, power = EpochTimer(), TimedPowerMethod(**power_cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        callbacks=[timer, power],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=accelerator,
        devices=1,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
    )
    trainer.fit(objects["task"], datamodule=objects["datamodule"])
    return cfg, objects, timer, power


def epoch_section(args, accelerator: str) -> None:
    """Per-epoch time over a preset run: ``--epochs`` epochs from the start, then one from a late state."""
    data = [f"data.n_train={args.n_train}", f"data.download={args.download}", "attack=none"]
    for preset in EPOCH_PRESETS:
        late = dict(s.split("=", 1) for s in args.late_state or []).get(preset)
        mine = args.certified if preset == "fmnist_certified" else []
        *_, first, _ = train(preset, [*data, *mine, f"trainer.max_epochs={args.epochs}"], accelerator, validate=True)
        held = []

        def prepare(objects, late=late, held=held):
            held.append(load_late_state(objects, late) if late else age(objects))

        *_, last, _ = train(preset, [*data, *mine, "trainer.max_epochs=1"], accelerator, prepare=prepare, validate=True)
        times, cpu = first.times + last.times, first.cpu + last.cpu
        print(
            f"[epochs] {preset:20s} epochs {', '.join(f'{t:.1f}' for t in times)} s, CPU "
            f"{', '.join(f'{t:.1f}' for t in cpu)} s (the last from "
            f"{'the checkpoint ' + late if late else 'the aged state'}: {held[0]} subnormal weights): "
            f"slowest / first epoch = {max(times) / times[0]:.2f} (CPU time: {max(cpu) / cpu[0]:.2f})"
        )


def update_floor(objects, steps: int = 60) -> tuple[float, float, float, int]:
    """What the callback's update costs inside a training loop, against the arithmetic it cannot avoid: real
    training steps of the trained net (its data, loss, Adam), after each either the update or only the two
    single-image products per layer that one warm-started iteration needs (no norms, writes or projections).
    Returns (step, update, products) in seconds, means over ``steps // 2`` steps each, and the number of layers."""
    net, task = objects["net"], objects["task"]
    power = PowerMethodCallback()
    ops, _ = power._modules(net)
    x, y = next(iter(objects["datamodule"].train_dataloader()))
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    net.train()
    t = {"step": 0.0, "update": 0.0, "products": 0.0}
    for i in range(steps + 10):
        t0 = time.perf_counter()
        loss = task.loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if i % 2:
            power.update(net)
        else:
            with torch.no_grad():
                for m in ops:
                    m.rmatvec(m.matvec(m.u, m.weight), m.weight)
        if i >= 10:
            t["step"] += t1 - t0
            t["update" if i % 2 else "products"] += time.perf_counter() - t1
    n = steps // 2
    return t["step"] / steps, t["update"] / n, t["products"] / n, len(ops)


def alternate(runs: dict, rounds: int) -> dict:
    """Each of ``runs`` (name -> a function that trains and returns ``(timer, power, result)``) ``rounds``
    times, in turns (A B A B ...), so that a machine whose speed drifts slows all of them alike; returns
    name -> list of what each round returned."""
    out = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            out[name].append(run())
    return out


def summary(results) -> tuple[float, float, float, float]:
    """Mean epoch wall and CPU time over all rounds, and the callback's share of the wall time (all of its
    per-step work, and its update alone)."""
    times = [t for timer, *_ in results for t in timer.times]
    cpu = [t for timer, *_ in results for t in timer.cpu]
    power = sum(p.seconds for _, p, *_ in results)
    update = sum(p.update_seconds for _, p, *_ in results)
    return sum(times) / len(times), sum(cpu) / len(cpu), power / sum(times), update / sum(times)


def peer_section(args, accelerator: str) -> None:
    """The certified preset's epoch time against the deel-torchlip-shaped net, same threads and data, in turns."""
    data = [
        f"data.n_train={args.n_train}",
        f"data.download={args.download}",
        "attack=none",
        f"trainer.max_epochs={args.epochs}",
    ]

    def ours():
        *_, timer, power = train("fmnist_certified", [*data, *args.certified], accelerator, validate=True)
        return timer, power

    def peer():
        *_, timer, power = train(
            "fmnist_certified",
            [*data, *PEER],
            accelerator,
            net=peer_net(),
            loss=HKR(alpha=0.99, min_margin=0.25),
            validate=True,
        )
        return timer, power

    res = alternate({"ours": ours, "peer": peer}, args.rounds)
    (a, ca, pa, ua), (b, cb, pb, ub) = summary(res["ours"]), summary(res["peer"])
    per_round = [sum(o[0].times) / sum(p[0].times) for o, p in zip(res["ours"], res["peer"])]
    print(
        f"[peer] fmnist_certified mean epoch {a:.1f} s (CPU {ca:.1f} s), deel-torchlip-shaped net {b:.1f} s "
        f"(CPU {cb:.1f} s) ({args.n_train} images, {torch.get_num_threads()} threads, {args.rounds} rounds in "
        f"turns): certified / peer = {a / b:.2f} (CPU time: {ca / cb:.2f}; per round: "
        f"{', '.join(f'{r:.2f}' for r in per_round)}); PowerMethodCallback share of the epoch: certified "
        f"{pa:.1%} (update {ua:.1%}), peer {pb:.1%} (update {ub:.1%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-eval", type=int, default=None, help="attacked images (default: 200; --runs: the run's own)")
    ap.add_argument("--n-iter", type=int, default=None, help="PGD iterations (default: 20; --runs: the run's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="ne, peer: train each net this many times, in turns (A B A B: a drifting machine slows both)",
    )
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--runs", nargs="*", help="finished run dirs (non-expansive first): attack their checkpoints")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train and attack")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument(
        "--certified",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="epochs, peer: overrides of the fmnist_certified preset (e.g. model.blocks=[2,2])",
    )
    ap.add_argument(
        "--late-state",
        nargs="*",
        metavar="PRESET=PATH",
        help="epochs: a run's checkpoint as the late state of a preset (default: the aged state)",
    )
    ap.add_argument("--no-flush", action="store_true", help="keep subnormal floats (the runner flushes them)")
    args = ap.parse_args()
    flush = flush_denormals(not args.no_flush)  # as the runner does: before torch starts its threads
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        ap.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}, subnormals flushed to zero: {flush}")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    if "epochs" in args.only:
        epoch_section(args, accelerator)
    if "peer" in args.only:
        peer_section(args, accelerator)
    if not {"ne", "attack"} & set(args.only):
        return

    models = {}
    if args.runs:
        for name, run in zip(PRESETS, args.runs):
            cfg, objects = load_run(run)
            models[name] = (cfg, objects)
    else:
        args.n_eval, args.n_iter = args.n_eval or 200, args.n_iter or 20
        data = [
            f"data.n_train={args.n_train}",
            f"data.n_test={args.n_eval}",
            f"trainer.max_epochs={args.epochs}",
            f"data.download={args.download}",
            "attack=pgd_l2",
        ]

        def run(preset):
            cfg, objects, timer, power = train(preset, data, accelerator)
            return timer, power, (cfg, objects)

        res = alternate({name: (lambda preset=preset: run(preset)) for name, preset in PRESETS.items()}, args.rounds)
        stats = {}
        for name, results in res.items():
            models[name] = results[-1][2]
            stats[name] = summary(results)
            ep, cpu = stats[name][:2]
            print(
                f"[train] {name:13s} mean epoch {ep:7.2f} s (CPU {cpu:.2f} s)  ({args.n_train / ep:7.0f} images/s)  "
                f"epochs: {', '.join(f'{t:.1f}' for timer, *_ in results for t in timer.times)}"
            )
        (ep_ne, cpu_ne, share, update), powers = stats["nonexpansive"], [p for _, p, _ in res["nonexpansive"]]
        n = [s for p in powers for s in p.substeps] or [0]
        per_round = [sum(a[0].times) / sum(b[0].times) for a, b in zip(res["nonexpansive"], res["resnet"])]
        print(
            f"[train] mean epoch time nonexpansive / resnet = {ep_ne / stats['resnet'][0]:.2f} "
            f"(CPU time: {cpu_ne / stats['resnet'][1]:.2f}; per round: {', '.join(f'{r:.2f}' for r in per_round)})"
        )
        print(
            f"[train] PowerMethodCallback share of the non-expansive epochs = {share:.2%} (its update alone "
            f"{update:.2%}; {sum(p.iterations for p in powers) / max(1, sum(p.updates for p in powers)):.2f} "
            f"iterations per layer and step, {sum(p.projections for p in powers)} projections, "
            f"{sum(p.corrections for p in powers)} corrections)"
        )
        print(f"[train] sub-steps n per block: mean {sum(n) / len(n):.2f}, max {max(n)}")
        step, upd, products, layers = update_floor(models["nonexpansive"][1])
        print(
            f"[train] inside a training loop (step {step * 1e3:.1f} ms): the update {upd * 1e3:.2f} ms "
            f"({upd / step:.2%} of a step); the {2 * layers} single-image products of one iteration alone "
            f"{products * 1e3:.2f} ms ({products / step:.2%})"
        )
    if "attack" not in args.only:
        return

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
        plain = pgd_l2_per_eps(net, x, y, eps, n_iter=n_iter)
        t_plain = time.perf_counter() - t0
        chunk = chunk_for(device, attack.get("chunk_size", "auto"))
        t0 = time.perf_counter()
        plain_chunked = pgd_l2_per_eps(net, x, y, eps, n_iter=n_iter, chunk_size=chunk, layout=True)
        t_chunked = time.perf_counter() - t0
        plain_passes = len(x) * n_iter * sum(e > 0 for e in eps)
        worse = max(a - b for a, b in zip(fast, plain))
        print(
            f"[attack] {name:13s} curve {t_fast:7.1f} s ({curve['pgd_passes']} image passes) vs plain {t_plain:7.1f} s "
            f"({plain_passes} passes): {t_plain / t_fast:.1f}x; "
            f"vs plain in chunks of {chunk} + layout {t_chunked:7.1f} s: "
            f"{t_chunked / t_fast:.1f}x; max(curve - plain accuracy) = {worse:+.3f} (<= 0: equal or stronger)"
        )
        print(f"[attack] {name:13s} eps      " + " ".join(f"{e:6.3f}" for e in eps))
        print(f"[attack] {name:13s} curve    " + " ".join(f"{a:6.3f}" for a in fast))
        print(f"[attack] {name:13s} plain    " + " ".join(f"{a:6.3f}" for a in plain))
        print(f"[attack] {name:13s} chunked  " + " ".join(f"{a:6.3f}" for a in plain_chunked))
        if curve["curve"][0]["certified_acc"] is not None:
            print(
                f"[attack] {name:13s} certified"
                + " ".join(f"{r['certified_acc']:6.3f}" for r in curve["curve"])
                + f"   (Lipschitz bound {curve['lipschitz_bound']:.3f})"
            )


if __name__ == "__main__":
    main()
