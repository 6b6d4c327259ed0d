"""Speed of the non-expansive machinery, as ratios measured in one run on this machine.

    python scripts/benchmark.py                       # 28×28 Fashion-MNIST (or synthetic) images, short run
    python scripts/benchmark.py --n-train 30000 --epochs 30 --n-eval 1000 --n-iter 100   # the full protocol

Prints:
* training: epoch time of the conv non-expansive net / its conv ResNet twin (same widths), images/s of both,
  the share of the non-expansive epoch spent in PowerMethodCallback, mean and max sub-steps n per block;
* attack: the batched robustness curve (all ε in one batch, correctly classified points only, early stop,
  monotone in ε) against the plain evaluation (one ε at a time, every point, every iteration), with both
  curves so the batched one can be checked to be equal or stronger.
"""
from __future__ import annotations

import argparse
import functools
import math
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from stablenets.callbacks import PowerMethodCallback
from stablenets.data import ImageDataModule
from stablenets.errors import ConfigError
from stablenets.models import ConvNonExpansiveNet, ConvResNet
from stablenets.robustness import pgd_l2, pgd_l2_plain
from stablenets.tasks import ClassificationTask


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._t)


def data(n_train: int, n_eval: int):
    dm = ImageDataModule("fashion_mnist", n_train=n_train, n_val=0, n_test=n_eval)
    try:
        dm.setup()
        return dm.train_set.tensors, dm.test_set.tensors, "Fashion-MNIST"
    except ConfigError:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (n_train + n_eval,), generator=g)
        x = torch.rand(n_train + n_eval, 1, 28, 28, generator=g) * 0.3
        for k in range(10):  # a learnable synthetic set: a bright patch per class
            x[y == k, :, 2 + 2 * k: 8 + 2 * k, 4:10] = 1.0
        return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), "synthetic 28x28"


def train(net, train_set, epochs: int, batch_size: int):
    """The paper's protocol: Adam, one-cycle 1e-4 -> 1e-2 -> 1e-4 (cosine), weight decay 1e-5, margin loss."""
    opt = functools.partial(torch.optim.Adam, lr=1e-4, weight_decay=1e-5)
    sched = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-2, div_factor=100, final_div_factor=1,
                              anneal_strategy="cos")
    task = ClassificationTask(net, optimizer=opt, scheduler=sched, loss="margin", margin=0.5)
    timer, power = EpochTimer(), PowerMethodCallback(record_substeps=True)
    loader = DataLoader(TensorDataset(*train_set), batch_size=batch_size, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[timer, power], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, loader)
    return timer, power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--eps", type=float, nargs="*", default=[0.0, 0.0314, 0.0627, 0.1412, 0.3, 0.5, 0.6, 0.8, 0.9])
    args = ap.parse_args()
    train_set, test_set, source = data(args.n_train, args.n_eval)
    print(f"data: {source}, {len(train_set[0])} train / {len(test_set[0])} eval images, torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    nets = {"nonexpansive": ConvNonExpansiveNet((1, 28, 28), 10), "resnet": ConvResNet((1, 28, 28), 10)}
    stats = {}
    for name, net in nets.items():
        timer, power = train(net, train_set, args.epochs, args.batch_size)
        ep = sum(timer.times) / len(timer.times)
        stats[name] = (ep, power)
        print(f"[train] {name:13s} mean epoch {ep:7.2f} s  ({len(train_set[0]) / ep:7.0f} images/s)  "
              f"epochs: {', '.join(f'{t:.1f}' for t in timer.times)}")
    ep_ne, power = stats["nonexpansive"]
    n = power.substeps
    print(f"[train] epoch time nonexpansive / resnet = {ep_ne / stats['resnet'][0]:.2f}")
    print(f"[train] PowerMethodCallback share of the non-expansive epochs = "
          f"{power.seconds / (ep_ne * args.epochs):.2%} ({power.iterations / max(1, power.updates):.2f} iterations per step)")
    print(f"[train] sub-steps n per block: mean {sum(n) / len(n):.2f}, max {max(n)}")

    x, y = test_set
    for name, net in nets.items():
        net.eval()
        t0 = time.perf_counter()
        fast = pgd_l2(net, x, y, args.eps, n_iter=args.n_iter)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = pgd_l2_plain(net, x, y, args.eps, n_iter=args.n_iter)
        t_plain = time.perf_counter() - t0
        worse = max(a - b for a, b in zip(fast.accuracy, plain))
        print(f"[attack] {name:13s} batched {t_fast:6.1f} s vs plain {t_plain:6.1f} s: {t_plain / t_fast:.1f}x faster; "
              f"max(batched - plain accuracy) = {worse:+.3f} (<= 0: equal or stronger)")
        print(f"[attack] {name:13s} eps      " + " ".join(f"{e:6.3f}" for e in args.eps))
        print(f"[attack] {name:13s} batched  " + " ".join(f"{a:6.3f}" for a in fast.accuracy))
        print(f"[attack] {name:13s} plain    " + " ".join(f"{a:6.3f}" for a in plain))
    bound = nets["nonexpansive"].lipschitz_bound()
    print(f"[certify] nonexpansive Lipschitz bound {bound:.3f} (finite: {math.isfinite(bound)})")


if __name__ == "__main__":
    main()
