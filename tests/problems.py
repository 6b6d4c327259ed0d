"""Shared test problems: small data files, configs and nets. No test copies a generator."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import lightning as pl
import numpy as np
from omegaconf import DictConfig

from stablenets.api import compose
from stablenets.models import NonExpansiveNet
from stablenets.nn import SpectralLinear
from stablenets.runner.search_path import CONF_DIR

CONF = Path(CONF_DIR)
GROUP_OPTIONS = {
    g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
    for g in (
        "model",
        "data",
        "task",
        "task/loss",
        "lipschitz",
        "attack",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
    )
}
LAYER_OPTIONS = sorted(p.stem for p in (CONF / "model" / "layer").glob("*.yaml"))
CONV_MODELS = ["conv_nonexpansive", "conv_resnet", "certified_conv", "lipconvnet"]
# a tiny classification run (seconds): a sweep of these tests a launcher, not training
EPS = [0.0, 0.1, 0.3]
TINY = [
    "model=nonexpansive",
    "model.depth=1",
    "model.width=4",
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=50",
    "trainer.max_epochs=2",
    "attack=pgd_l2",
    f"attack.eps=[{','.join(map(str, EPS))}]",
    "attack.n_iter=3",
    "attack.n_eval=20",
]


def cli(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    """``stablenets-train <args>`` in ``cwd``; with ``background=True`` a detached process (own session).
    The tests dir is on its ``PYTHONPATH`` (and its jobs'), so configs can name helpers of this module."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "stablenets.train", *args]
    if kw.get("background"):
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


ENTRY_POINTS_DRIVER = r"""
import contextlib, importlib, io, json, sys
from hydra.core.global_hydra import GlobalHydra

results = []
for module, argv in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    main = importlib.import_module(module).main
    out, code = io.StringIO(), 0
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try:
            if module == "stablenets.train":
                sys.argv = ["stablenets-train", *argv]
                main()
            else:
                main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    results.append({"code": code, "output": out.getvalue()})
print(json.dumps(results))
"""


def run_entry_points(calls: list[tuple[str, list[str]]], cwd: Path, timeout: int = 600) -> list[dict]:
    """Each ``(module, argv)`` through the real entry point (``stablenets.train`` with Hydra, or another module's
    ``main(argv)``) in one fresh Python process, in order; ``[{"code", "output"}]`` (stdout and stderr)."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY_POINTS_DRIVER, json.dumps(calls)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """An IDX file of unsigned bytes (the MNIST / Fashion-MNIST format)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)


def make_idx_dataset(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Tiny learnable 28×28 images: class k has a bright 6×6 patch at a class-specific place."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 2 + 8 * (k // 3) % 22, 2 + 8 * (k % 3)
            images[i, r : r + 6, c : c + 6] = 255
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
    return root


def make_cifar_dataset(root: Path, n: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    return root


class Pace(pl.Callback):
    """Sleeps after every training step: a run that takes wall-clock time but little CPU, for tests of time
    limits that should not depend on the machine's speed (``+callbacks.pace._target_=problems.Pace``)."""

    def __init__(self, seconds_per_step: float, seconds_per_val_batch: float = 0.0) -> None:
        self.seconds_per_step, self.seconds_per_val_batch = seconds_per_step, seconds_per_val_batch

    def on_train_batch_start(self, *args) -> None:  # inside the step a budget times (its timer starts first)
        time.sleep(self.seconds_per_step)

    def on_validation_batch_start(self, trainer, *args) -> None:
        if not trainer.sanity_checking:
            time.sleep(self.seconds_per_val_batch)


class Die(pl.Callback):
    """With ``kill``, SIGKILLs its own process at the first training step: a job killed from outside (the kernel's
    OOM killer, a lost node) that writes nothing (``+callbacks.die._target_=problems.Die +callbacks.die.kill=...``)."""

    def __init__(self, kill: bool = True) -> None:
        self.kill = kill

    def on_train_batch_end(self, *args) -> None:
        import signal

        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)


def float64(make):
    """``make()`` built in float64 (every tensor it creates; a layer whose parts fix their dtype at construction,
    as orthogonium's, cannot be converted with ``.double()`` afterwards)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return make().double()
    finally:
        torch.set_default_dtype(old)


def compose_cfg(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/train.yaml`` as the CLI would, with the hydra node set, into ``output_dir``."""
    return compose(overrides, output_dir=output_dir)


def read_wandb_records(path: Path) -> list:
    """Records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header (``:W&B``, magic, version)
    then the LevelDB log format — 32 KiB blocks of chunks (crc32, length, type) holding protobuf Records."""
    import struct as st

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, block, records, parts = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = st.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(parts)
            records.append(rec)
            parts = b""
    return records


# -- small problems and a short training loop with the real task and PowerMethodCallback ---------------------
def blobs(n: int = 300, dim: int = 4, classes: int = 3, seed: int = 0, spread: float = 0.5):
    """Gaussian blobs around ``classes`` random centres: ``(x, y)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


def patch_images(n: int = 128, size: int = 12, classes: int = 4, seed: int = 0):
    """``(n, 1, size, size)`` images in [0, 1]: class k has a bright patch at a class-specific place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.3
    for k in range(classes):
        r, c = 2 * (k // 2), 2 + 4 * (k % 2)
        x[y == k, :, r : r + 4, c : c + 4] = 1.0
    return x, y


def fit(
    net,
    x,
    y,
    optimizer=None,
    epochs: int = 1,
    steps: int = -1,
    batch_size: int = 32,
    task: str = "classification",
    callback=None,
):
    """Train ``net`` with the real task and ``PowerMethodCallback``; returns ``(task, callback)``."""
    import lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from stablenets.callbacks import PowerMethodCallback
    from stablenets.tasks import ClassificationTask, InverseProblemTask

    optimizer = optimizer or (lambda params: torch.optim.Adam(params, lr=0.05))
    cls = ClassificationTask if task == "classification" else InverseProblemTask
    module = cls(net, optimizer=optimizer)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    callback = callback or PowerMethodCallback(n_iters=1, tol=1e-3, max_iters=20)
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=steps,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, loader)
    return module, callback


class HalvedHeadNet(NonExpansiveNet):
    """A planted wrong bound: a dense non-expansive net whose head reports half its norm."""

    def __init__(self, in_shape, out_dim: int, L: float | None = None, **kwargs) -> None:
        super().__init__(in_shape, out_dim, L=L, **kwargs)
        head = self.head
        head.lipschitz_bound = lambda: 0.5 * SpectralLinear.lipschitz_bound(head)
