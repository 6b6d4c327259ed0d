"""A LightningDataModule over in-memory tensors, with an epoch-seeded shuffle.

The shuffle order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from ``last.ckpt``
sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset


class EpochSeededSampler(Sampler[int]):
    """Random permutation per epoch from ``seed + epoch`` (Lightning calls :meth:`set_epoch`)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class TensorDataModule(L.LightningDataModule):
    """Subclasses fill ``self.train_set``, ``self.val_set``, ``self.test_set`` in :meth:`build` and set
    ``in_shape`` / ``out_dim`` (what a model needs to know about the data)."""

    in_shape: tuple[int, ...]
    out_dim: int

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def build(self) -> None:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build()

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        sampler = EpochSeededSampler(len(ds), self.seed) if train else None
        return DataLoader(ds, batch_size=self.batch_size if train else self.eval_batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)

    @staticmethod
    def tensors(*arrays: torch.Tensor) -> TensorDataset:
        return TensorDataset(*arrays)
