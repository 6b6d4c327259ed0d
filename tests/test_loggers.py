"""The CSV metrics log a resumed run continues (the whole-run check is in test_sweeps and test_slurm)."""

from __future__ import annotations

import pandas as pd

from stablenets.runner.loggers import ResumableCSVLogger


def _segment(root, rows) -> None:
    logger = ResumableCSVLogger(root)
    for step, epoch, metrics in rows:
        logger.log_metrics({**metrics, "epoch": epoch}, step)


def test_a_resumed_segment_replaces_the_epochs_it_redoes(tmp_path):
    _segment(
        tmp_path,
        [
            (3, 0, {"val/loss": 1.0}),
            (3, 0, {"train/loss_epoch": 1.5}),
            (5, 1, {"train/loss_step": 0.9}),
            (7, 1, {"val/loss": 0.8}),
        ],
    )  # killed in epoch 1
    path = tmp_path / "csv" / "metrics.csv"
    with path.open("a") as f:
        f.write("2,0.7")  # a row cut short by the kill
    # resumed from the checkpoint of epoch 0: redoes epoch 1, with a new column
    _segment(
        tmp_path,
        [(5, 1, {"train/loss_step": 0.9}), (7, 1, {"val/loss": 0.8, "val/acc": 0.5}), (9, 2, {"val/loss": 0.7})],
    )
    log = pd.read_csv(path)
    assert log.epoch.tolist() == [0, 0, 1, 1, 2] and log.step.tolist() == [3, 3, 5, 7, 9]
    assert log["val/loss"].dropna().tolist() == [1.0, 0.8, 0.7]
    assert log["val/acc"].count() == 1 and log.columns.tolist() == sorted(log.columns)


def test_a_row_cut_short_is_dropped_when_nothing_is_redone(tmp_path):
    _segment(tmp_path, [(3, 0, {"val/loss": 1.0})])
    path = tmp_path / "csv" / "metrics.csv"
    with path.open("a") as f:
        f.write("1,")
    _segment(tmp_path, [(7, 1, {"val/loss": 0.8})])
    assert pd.read_csv(path).epoch.tolist() == [0, 1]


def test_every_row_is_on_disk_when_logged(tmp_path):
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"val/loss": 1.0, "epoch": 0}, 3)
    logger.log_metrics({"test/acc": 0.5})  # a summary without a step sorts last
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")  # no save() or finalize() needed
    assert log.step.tolist() == [3, 3] and log["test/acc"].count() == 1
