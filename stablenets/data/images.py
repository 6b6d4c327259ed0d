"""Image classification data (Section 6.2, Exercise 16): Fashion-MNIST, MNIST, CIFAR-10.

Pixels stay in ``[0, 1]`` (no normalisation here: ε is measured in pixel units).  Files are found
locally first — an explicit ``data_dir``, then Debian's ``/usr/share/datasets/<name>`` (package
``dataset-fashion-mnist``) — and downloaded through torchvision only when ``download=true``.
The validation split is taken from training images *after* the first ``n_train``, never from the test set.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..checks import check_count
from .base import DataError, TensorDataModule

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DATASETS = {
    # name: (torchvision class, Debian dir, shape, local file format)
    "fashion_mnist": ("FashionMNIST", "/usr/share/datasets/fashion-mnist", (1, 28, 28), "idx"),
    "mnist": ("MNIST", "/usr/share/datasets/mnist", (1, 28, 28), "idx"),
    "cifar10": ("CIFAR10", None, (3, 32, 32), "cifar"),
}
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # a truncated or corrupt .gz
        raise DataError(f"{path} is damaged ({type(e).__name__}: {e}); replace it with a good copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or len(data) < 4 + 4 * data[3]:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (a damaged or truncated header); replace it with a good copy"
        )
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(
            f"{path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}; replace it with a good copy"
        )
    return arr.reshape(dims)


def idx_count(path: Path) -> int:
    """The number of items of an IDX file from its header alone (its first dimension); -1 for a damaged header
    (:func:`read_idx` names the damage when the file is read)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(8)
    except (OSError, EOFError, gzip.BadGzipFile):
        return -1
    return int.from_bytes(head[4:8], "big") if len(head) == 8 and head[3] >= 1 else -1


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: ``(N, 3, 32, 32)`` uint8 images and labels."""
    import pickle

    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {e}); replace it with a good copy") from None


def find_data_dir(candidates: list[Path], fmt: str) -> Path | None:
    """First directory holding every file of the format (IDX: plain or ``.gz``, also under ``<X>/raw``)."""
    for base in candidates:
        if fmt == "cifar":
            for d in (base, base / "cifar-10-batches-py"):
                if all((d / n).is_file() for names in CIFAR_FILES.values() for n in names):
                    return d
            continue
        for d in (base, base / "raw", *(base / sub / "raw" for sub in ("FashionMNIST", "MNIST"))):
            if all(_idx_path(d, name) for pair in IDX_FILES.values() for name in pair):
                return d
    return None


def _idx_path(d: Path, name: str) -> Path | None:
    for p in (d / name, d / f"{name}.gz"):
        if p.is_file():
            return p
    return None


class ImageDataModule(TensorDataModule):
    box = (0.0, 1.0)  # pixel range: attacks keep their images in it

    def __init__(
        self,
        name: str = "fashion_mnist",
        data_dir: str | None = None,
        download: bool = False,
        n_train: int | None = 30000,
        n_val: int = 1000,
        n_test: int | None = 1000,
        search_system: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if name not in DATASETS:
            raise ValueError(f"unknown image data set {name!r}; allowed: {sorted(DATASETS)}")
        if n_val is None:
            raise ValueError("data.n_val must be an integer >= 1, got None")
        try:
            check_count(**{"data.n_train": n_train, "data.n_val": n_val, "data.n_test": n_test})
        except ValueError as e:
            raise ValueError(f"{e} (data.n_train and data.n_test may be null: all images)") from None
        self.name, self.data_dir, self.download, self.search_system = name, data_dir, download, search_system
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.in_shape = DATASETS[name][2]
        self.out_dim = 10

    # -- locating ---------------------------------------------------------------------------------
    def candidates(self) -> list[Path]:
        """An explicit ``data_dir`` is the only place looked at; otherwise Debian's folder (if any)."""
        if self.data_dir:
            return [Path(os.path.expanduser(str(self.data_dir)))]
        debian = DATASETS[self.name][1]
        return [Path(debian)] if debian and self.search_system else []

    def locate(self) -> Path | None:
        """The folder with local files, or ``None``."""
        return find_data_dir(self.candidates(), DATASETS[self.name][3])

    def check_available(self) -> None:
        """Raise :class:`DataError` naming the options when the data cannot be had, or when the files hold fewer
        images than ``n_train``, ``n_val``, ``n_test`` ask for."""
        d = self.locate()
        if d is not None:
            self.check_counts(d)
            return
        if self.download:
            return
        debian = DATASETS[self.name][1]
        if self.data_dir:
            where = Path(os.path.expanduser(str(self.data_dir)))
            state = (
                "does not exist"
                if not where.exists()
                else "holds no " + ("CIFAR-10 batches" if DATASETS[self.name][3] == "cifar" else "IDX files")
            )
            raise DataError(
                f"data.data_dir={self.data_dir} {state} for data set {self.name!r}. Point data.data_dir at a folder "
                f"with its files, drop data.data_dir to use "
                + (f"Debian's copy at {debian} (apt-get install dataset-fashion-mnist), " if debian else "")
                + "or allow the torchvision download into data.data_dir with data.download=true."
            )
        raise DataError(
            f"data set {self.name!r} not found and download is disabled. Either (1) set data.data_dir to a "
            f"folder with its files (searched: {[str(c) for c in self.candidates()] or 'none'}), "
            + (
                f"(2) install Debian's copy at {debian} (apt-get install dataset-fashion-mnist), "
                if debian
                else "(2) unpack torchvision's cifar-10-batches-py into data.data_dir, "
            )
            + "or (3) allow the torchvision download with data.download=true."
        )

    def available(self, d: Path) -> dict[str, int]:
        """Images per split in the folder ``d`` from the IDX headers (-1: not known before the files are read, as
        for CIFAR-10's pickled batches; :meth:`build` checks the counts it read)."""
        if DATASETS[self.name][3] == "cifar":
            return {split: -1 for split in CIFAR_FILES}
        return {split: idx_count(_idx_path(d, images)) for split, (images, _) in IDX_FILES.items()}

    def check_counts(self, d: Path, available: dict[str, int] | None = None) -> None:
        """Refuse ``n_train + n_val`` or ``n_test`` beyond what the files hold, naming the key and both counts,
        rather than training silently on fewer images than asked for (a sweep's row would be mislabelled)."""
        have = available or self.available(d)
        n_tr, n_te = have["train"], have["test"]
        if n_tr >= 0 and self.n_val >= n_tr:
            raise DataError(
                f"data.n_val={self.n_val} leaves no training images: {d} holds {n_tr} training images "
                f"({self.name}); lower data.n_val"
            )
        if n_tr >= 0 and self.n_train is not None and self.n_train + self.n_val > n_tr:
            raise DataError(
                f"data.n_train={self.n_train} asks for more training images than {d} holds: {n_tr} "
                f"({self.name}), of which data.n_val={self.n_val} are the validation split, so at most "
                f"{n_tr - self.n_val} train. Set data.n_train<={n_tr - self.n_val}, or data.n_train=null "
                "for all of them"
            )
        if n_te == 0:
            raise DataError(f"{d} holds no test images ({self.name}); replace the test files with good copies")
        if n_te > 0 and self.n_test is not None and self.n_test > n_te:
            raise DataError(
                f"data.n_test={self.n_test} asks for more test images than {d} holds: {n_te} "
                f"({self.name}). Set data.n_test<={n_te}, or data.n_test=null for all of them"
            )

    # -- loading ----------------------------------------------------------------------------------
    def _load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.locate()
        if d is None:  # check_available passed, so download is allowed
            import torchvision

            root = self.data_dir or os.path.join(os.getcwd(), "data")
            getattr(torchvision.datasets, DATASETS[self.name][0])(root, train=split == "train", download=True)
            self.data_dir = root
            d = self.locate()
        if DATASETS[self.name][3] == "cifar":
            parts = [read_cifar_batch(d / n) for n in CIFAR_FILES[split]]
            images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
            labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
            return images.float().div_(255.0), labels
        img_name, lbl_name = IDX_FILES[split]
        images = torch.from_numpy(read_idx(_idx_path(d, img_name)).copy())
        labels = torch.from_numpy(read_idx(_idx_path(d, lbl_name)).astype(np.int64))
        top = int(labels.max()) if len(labels) else 0
        if len(images) != len(labels) or images.dim() != 3 or top >= self.out_dim:
            raise DataError(
                f"{_idx_path(d, img_name)} and {_idx_path(d, lbl_name)} do not match: {tuple(images.shape)} "
                f"images, {len(labels)} labels (max {top}); replace them with good copies"
            )
        return images.unsqueeze(1).float().div_(255.0), labels

    def build(self) -> None:
        self.check_available()
        x_tr, y_tr = self._load_split("train")
        x_te, y_te = self._load_split("test")
        for split, x in (("train", x_tr), ("test", x_te)):
            if tuple(x.shape[1:]) != self.in_shape:
                raise DataError(
                    f"the {split} images of {self.data_dir or self.locate()} are {tuple(x.shape[1:])}, not "
                    f"{self.name}'s {self.in_shape}: these are not {self.name} files; replace them"
                )
        self.check_counts(self.locate(), {"train": len(x_tr), "test": len(x_te)})  # after a download too
        n_tr = len(x_tr) - self.n_val if self.n_train is None else self.n_train
        self.train_set = self.tensors(x_tr[:n_tr], y_tr[:n_tr])  # validation: the images after the training ones
        self.val_set = self.tensors(x_tr[n_tr : n_tr + self.n_val], y_tr[n_tr : n_tr + self.n_val])
        n_te = len(x_te) if self.n_test is None else self.n_test
        self.test_set = self.tensors(x_te[:n_te], y_te[:n_te])
