"""A LightningDataModule over in-memory tensors, batched by index where the model lives.

Every split is held as tensors; :class:`TensorBatches` yields its batches by indexing them directly —
no per-sample ``__getitem__`` and collation — on the device the trainer runs on (the split is copied
there once).  The shuffle order of epoch ``e`` is ``randperm(n)`` from a CPU generator seeded with
``(seed, e)``, so a run resumed from ``last.ckpt`` sees the same batches as an uninterrupted one, on any
device.  Under DDP each rank takes every ``world``-th index of the order (training: cut to equal lengths,
so that every rank takes the same number of steps; evaluation: all of them, the metrics are reduced as
sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as pl
import torch
from torch.utils.data import Dataset, TensorDataset

from ..checks import check_count
from ..ranks import process_group


class DataError(ValueError):
    """The data cannot be had or read: not on disk with no download allowed, a damaged file, too few samples.
    The runner reports it like a bad config value (one paragraph, exit code 2)."""


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation that depends only on ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class TensorBatches:
    """Batches of an in-memory split, indexed on ``device()`` (see the module docstring)."""

    def __init__(
        self,
        dataset: TensorDataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        device: Callable[[], torch.device] = lambda: torch.device("cpu"),
    ) -> None:
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self._epoch, self._device = epoch, device
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        order = epoch_order(n, self.seed, self._epoch()) if self.shuffle else torch.arange(n)
        rank, world = process_group()
        shard = order[rank::world]
        return shard[: n // world] if self.shuffle and world > 1 else shard

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        device = torch.device(self._device())
        if device not in self._on:
            self._on = {device: tuple(t.to(device) for t in self.dataset.tensors)}  # one copy, where it is used
        return self._on[device]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self._tensors()
        idx = self._indices().to(tensors[0].device)
        for i in range(0, len(idx), self.batch_size):
            take = idx[i : i + self.batch_size]
            yield tuple(t[take] for t in tensors)

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)


class TensorDataModule(pl.LightningDataModule):
    """Subclasses fill ``self.train_set``, ``self.val_set``, ``self.test_set`` (``TensorDataset``) in
    :meth:`build` and set ``in_shape`` / ``out_dim`` (what a model needs to know about the data)."""

    in_shape: tuple[int, ...]
    out_dim: int

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        check_count(batch_size=batch_size, eval_batch_size=eval_batch_size)
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def build(self) -> None:
        raise NotImplementedError

    def check_available(self) -> None:
        """Raise :class:`DataError` naming the options when the data cannot be had (generated data always can)."""

    def figures(self, net, out_dir, title: str = "") -> None:
        """The data set's own figures of a trained net (e.g. the Swiss roll's decision regions); none by default."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build()

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _batches(self, ds: TensorDataset, train: bool) -> TensorBatches:
        return TensorBatches(
            ds,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            epoch=self._epoch,
            device=self._device,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches(self.train_set, True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches(self.val_set, False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.test_set, False)

    @staticmethod
    def tensors(*arrays: torch.Tensor) -> TensorDataset:
        return TensorDataset(*arrays)
