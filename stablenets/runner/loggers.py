"""The run's loggers: built from the ``logger`` group, the results logged at the end, W&B finished; and a
CSV metrics log that a resumed run continues instead of overwriting.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when a new process opens the same log dir, so a run that
is killed, preempted or requeued and then resumed from its checkpoint kept only the metrics of its last
segment.  :class:`ResumableCSVLogger` keeps the file and continues it:

* every row is on disk as soon as it is logged (``flush_logs_every_n_steps=1``), so a killed run loses
  no row that its checkpoint does not also hold;
* a resumed segment redoes everything after its checkpoint, so when it logs its first row (of the epoch it
  resumes at), the rows an earlier segment wrote for that epoch and later are dropped (rewritten
  atomically).  Every epoch is then in the file exactly once, with the values of the segment that
  completed it, and the file equals the one an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from .config import build
from .errors import ConfigError
from .run_dir import RunDir


def is_wandb(logger_or_target: Any) -> bool:
    name = logger_or_target if isinstance(logger_or_target, str) else type(logger_or_target).__name__
    return "Wandb" in name


def make_loggers(cfg: DictConfig, run: RunDir) -> list:
    """Every logger of the ``logger`` group.  W&B runs offline unless ``offline: false``, with an id derived
    from the run dir (a resumed run continues the same W&B run) and the full resolved config as its config,
    so that dashboards can group and filter by any key."""
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if node is not None and str(node.get("_target_", "")).endswith("ResumableCSVLogger"):
            read_rows(Path(str(node.save_dir)) / str(node.name or "") / "metrics.csv")  # damaged: said before fit
        if node is None:
            continue
        wandb = is_wandb(str(node._target_))
        if wandb:
            os.environ.setdefault("WANDB_MODE", "offline" if node.get("offline", True) else "online")
        logger = build(f"logger.{key}", node, **({"id": node.get("id") or run.id} if wandb else {}))
        if wandb:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        loggers.append(logger)
    return loggers


def log_results(loggers: list, metrics: dict[str, Any], evaluation) -> None:
    """The final metrics to every logger; the robustness curve to W&B as a table and a line plot."""
    for lg in loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        if is_wandb(lg) and evaluation.robustness is not None:
            _log_curve(lg, evaluation.robustness)


def _log_curve(logger, robustness: dict) -> None:
    """Robustness curve as a W&B table + line plot (dashboards overlay them across runs)."""
    import wandb

    rows = robustness["curve"]
    cols = ["eps", "pgd_acc", "autoattack_acc", "certified_acc"]
    table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])
    logger.experiment.log(
        {
            "robustness/curve": table,
            "robustness/pgd_plot": wandb.plot.line(table, "eps", "pgd_acc", title="PGD accuracy vs eps"),
        }
    )
    log_curve_points(logger.experiment, rows)  # and as points against an ε axis: overlaid across a sweep


def finish(loggers: list) -> None:
    """End the W&B run of this process, if any (the next job of a multirun starts its own)."""
    if any(is_wandb(lg) for lg in loggers):
        import wandb

        wandb.finish()


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, rows)`` of a metrics CSV; a last line cut short by a kill is left out.  A file that is not such a
    CSV (undecodable, a row with more fields than the header) is a :class:`ConfigError` naming it."""
    if not path.is_file():
        return [], []
    try:
        text = path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        rows, problem = None, str(e)
    else:
        bad = next((i for i, r in enumerate(rows) if None in r), None)
        problem = None if bad is None else f"row {bad + 2} has more fields than the header"
    if problem is not None:
        raise ConfigError(
            f"{path} is damaged ({problem}); the resumed run continues it. Restore it, or delete it to start a new "
            "one (the checkpoint is kept)"
        )
    return list(reader.fieldnames or []), rows


def _epoch(value: Any) -> float:
    """A row's epoch as a number; rows without one (summaries logged after fitting) sort after every epoch."""
    try:
        return float(value) if value not in (None, "") else math.inf
    except (TypeError, ValueError):
        return math.inf


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        header, rows = read_rows(Path(log_dir) / self.NAME_METRICS_FILE)
        super().__init__(log_dir=log_dir)
        self.metrics_keys = header
        self._earlier: list[dict[str, str]] | None = rows if header else None

    def _check_log_dir_exists(self) -> None:
        """Keep the earlier segments' ``metrics.csv`` (Lightning's writer deletes it here)."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._earlier is not None:  # first row of this segment: drop what it is about to redo
            start = _epoch(metrics_dict.get("epoch"))
            self._write_all([r for r in self._earlier if _epoch(r.get("epoch")) < start])  # and a cut-off line
            self._earlier = None
        super().log_metrics(metrics_dict, step)

    def save(self) -> None:
        """Append the new rows; rewrite the whole file (atomically) only when new columns appear."""
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        if new_keys or not path.is_file():
            self.metrics_keys = sorted(set(self.metrics_keys) | new_keys)
            self._write_all(read_rows(path)[1] + self.metrics)
        else:
            with path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.metrics_keys).writerows(self.metrics)
        self.metrics = []

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        path = Path(self.metrics_file_path)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives restarts: see the module docstring.

    Rows logged without a step (a summary after fitting) get the last logged step, so they sort last.
    """

    def __init__(
        self,
        save_dir: str,
        name: str | None = "csv",
        version: int | str | None = "",
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ) -> None:
        super().__init__(
            save_dir, name=name, version=version, prefix=prefix, flush_logs_every_n_steps=flush_logs_every_n_steps
        )
        self._last_step = 0

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        step = self._last_step if step is None else step
        self._last_step = step
        super().log_metrics(metrics, step)


# -- robustness curves as W&B points against their own x-axis ----------------------------------------------
# Each point of a run's curve is logged as one history row ``{robustness/eps: ε, robustness/pgd_acc: ...,
# robustness/certified_acc: ..., ...}`` (the kinds the curve has), and ``wandb.define_metric`` makes
# ``robustness/eps`` the step metric of each accuracy: W&B's line plots then have ε on the x-axis, and a workspace
# of runs (grouped by the sweep's name, filterable by any config key) overlays the curves of all its runs
# without a custom chart.

EPS = "robustness/eps"
KINDS = ("pgd_acc", "autoattack_acc", "certified_acc", "certified_sqrt2_acc")


def log_curve_points(run, curve: list[dict[str, Any]]) -> int:
    """Define the ε axis and log one row per point of ``curve`` to the W&B ``run``; return the rows logged."""
    kinds = [k for k in KINDS if any(row.get(k) is not None for row in curve)]
    if not kinds:
        return 0
    run.define_metric(EPS, hidden=False)
    for kind in kinds:  # exact names: they take precedence over a logger's "*" glob (Lightning's global step)
        run.define_metric(f"robustness/{kind}", step_metric=EPS)
    for row in sorted(curve, key=lambda r: r["eps"]):
        run.log({EPS: float(row["eps"]), **{f"robustness/{k}": float(row[k]) for k in kinds if row.get(k) is not None}})
    return len(curve)
