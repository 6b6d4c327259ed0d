"""Equal-time budgets (``callbacks.time_budget``): the planned step count comes from timed steps, the one-cycle is
planned over exactly those steps — to its peak and its end, also within a fraction of an epoch — validation runs
at the end, the plan survives a kill and a relaunch that spent more than the budget, and bad budgets are refused."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from functools import partial

import lightning as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from problems import Pace, cli
from stablenets.callbacks import TimeBudget
from stablenets.tasks import ClassificationTask


class _Log(pl.Callback):
    """The learning rate of every step and the number of validations."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.validations = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validations += not trainer.sanity_checking


def _one_cycle(n: int, max_lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=n)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _fit(
    n_samples: int,
    seconds: float,
    max_epochs: int = 200,
    budget: TimeBudget | None = None,
    pace: Pace | None = None,
    **trainer_kw,
):
    torch.manual_seed(0)
    x, y = torch.randn(n_samples, 4), torch.randint(0, 2, (n_samples,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    task = ClassificationTask(
        nn.Linear(4, 2),
        partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1),
    )
    budget, log = budget or TimeBudget(measure_steps=4, skip_steps=1), _Log()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[budget, log, pace or Pace(seconds)],  # the pace sleeps inside each timed step
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        **trainer_kw,
    )
    trainer.fit(task, loader, loader)
    return trainer, budget, log


def test_budget_plans_the_steps_and_the_one_cycle_over_them():
    trainer, budget, log = _fit(64, 0.05, max_time={"seconds": 2})  # 4 steps per epoch, >= 0.05 s each
    n = budget.planned_steps
    assert n == math.floor(2 / budget.seconds_per_step()) and 8 <= n <= 40
    assert trainer.global_step == n == len(log.lrs)  # every planned step ran: Lightning's limit did not cut them
    expected = _one_cycle(n)
    planned_at = budget.skip_steps + budget.measure_steps  # the plan is made after the timed steps
    assert log.lrs[planned_at:] == pytest.approx(expected[planned_at:], rel=1e-9)
    assert log.lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-6)  # the cycle ended where it should
    metrics = trainer.callback_metrics
    assert metrics["budget/steps"] == metrics["budget/steps_reached"] == n
    assert metrics["budget/epochs"] == pytest.approx(n / 4) and metrics["model/parameters"] == 10
    assert metrics["budget/train_seconds"] >= 0.05 * n and metrics["budget/val_seconds"] > 0


def test_a_budget_below_one_epoch_reaches_the_peak_and_the_end_then_validates():
    trainer, budget, log = _fit(640, 0.05, max_time={"seconds": 1})  # 40 steps per epoch, ~20 fit
    n = budget.planned_steps
    assert 8 <= n < 40 and trainer.global_step == n  # less than one epoch of 40 steps
    assert max(log.lrs) == pytest.approx(0.1, rel=0.1)  # the warm-up reached the peak ...
    assert log.lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-6)  # ... and the annealing its end
    assert log.validations == 1 and "val/acc" in trainer.callback_metrics  # validated once, at the end


def test_a_resumed_plan_trains_its_steps_whatever_time_was_spent():
    budget = TimeBudget()
    budget.load_state_dict({"planned_steps": 6, "step_seconds": [0.05] * 3})  # as restored from a checkpoint
    # the wall-clock limit is shorter than the planned steps with their validations: Lightning's timer would stop it
    trainer, budget, log = _fit(32, 0.05, max_time={"seconds": 0.3}, budget=budget)
    assert trainer.global_step == 6 and budget.planned_steps == 6 and budget.replans == 0
    assert TimeBudget._timer(trainer)._duration is None  # Lightning's limit lifted: the plan decides


class _PaceChange(Pace):
    """A step cost multiplied by ``factor`` after the second epoch (as a gradient-flow block's sub-steps grow with
    T; or a neighbour's job ends and frees a core)."""

    def __init__(self, seconds_per_step: float, factor: float) -> None:
        super().__init__(seconds_per_step)
        self.factor = factor

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 2:
            self.seconds_per_step *= self.factor


def test_steps_that_grow_slower_are_re_planned_to_the_budget_and_the_cycle_still_ends():
    trainer, budget, log = _fit(64, 0.02, pace=_PaceChange(0.02, 3), max_time={"seconds": 2})  # 4 steps an epoch
    first_plan = math.floor(2 / budget.seconds_per_step())  # ~95 steps at the first pace
    assert budget.replans >= 1 and trainer.global_step == budget.planned_steps < 0.6 * first_plan
    assert abs(budget.train_seconds - 2) < 0.2 * 2  # the budget kept (without re-planning: ~5.6 s)
    assert log.lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-6)  # the re-planned cycle ended where it should


def test_steps_that_grow_faster_are_re_planned_past_the_first_plans_epochs():
    """A re-plan may add epochs: the first plan's epoch count (which the trainer is set to) is not a cap."""
    trainer, budget, log = _fit(64, 0.06, pace=_PaceChange(0.06, 1 / 3), max_time={"seconds": 2})
    first_plan = math.floor(2 / budget.seconds_per_step())  # ~33 steps (9 epochs) at the first pace
    assert budget.replans >= 1 and trainer.global_step == budget.planned_steps > 1.5 * first_plan
    assert abs(budget.train_seconds - 2) < 0.2 * 2  # the budget used (without re-planning upwards: ~1.2 s)
    assert log.lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-6)


def test_without_a_budget_the_epochs_are_kept_and_costs_recorded():
    trainer, budget, log = _fit(32, 0.0, max_epochs=3)
    assert budget.planned_steps is None and trainer.current_epoch == 3
    metrics = trainer.callback_metrics
    assert metrics["budget/epochs_reached"] == 3 and metrics["budget/steps_reached"] == 6
    assert len(budget.epoch_seconds) == 3 and metrics["budget/seconds_per_epoch"] > 0


@pytest.mark.parametrize("value", ["00:00:00:00", "00:00:-01:00", "ten minutes", "1:30"])
def test_a_zero_negative_or_malformed_budget_is_refused_before_any_work(tmp_path, value):
    run = tmp_path / "run"
    proc = cli(tmp_path, "callbacks=[default,time_budget]", f"trainer.max_time={value}", f"hydra.run.dir={run}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.max_time" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "checkpoints").exists() and not (run / "results.json").exists()


def test_the_readme_budget_example_runs_on_the_default_cosine_preset(tmp_path):
    """``callbacks=[default,time_budget]`` with ``trainer.max_time`` on the default study (a cosine schedule)."""
    run = tmp_path / "run"
    proc = cli(
        tmp_path,
        "callbacks=[default,time_budget]",
        "trainer.max_time=00:00:00:03",
        "progress=none",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics["budget/steps_reached"] == metrics["budget/steps"] >= 1


def _checkpoint(run):
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    plan = next((v for v in state.get("callbacks", {}).values() if isinstance(v, dict) and "planned_steps" in v), {})
    timer = next((v for k, v in state.get("callbacks", {}).items() if k.startswith("Timer")), {})
    return state, plan.get("planned_steps"), timer.get("time_elapsed", {}).get("train", 0.0)


def _epoch_row_written(run, epoch: int) -> bool:
    """Whether metrics.csv holds the checkpointed epoch's summary row.  Lightning logs it just after the epoch's
    checkpoint is written, so a kill within that window loses the row (docs/design-notes.md: a known gap); the test
    kills outside it."""
    import pandas as pd

    try:
        rows = pd.read_csv(run / "csv" / "metrics.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return False
    if "budget/steps_reached" not in rows:
        return False
    return bool((rows.dropna(subset=["budget/steps_reached"])["epoch"] == epoch).any())


def test_a_run_killed_after_its_budget_resumes_and_trains_its_planned_steps(tmp_path):
    """Kill and relaunch a budget run whose wall time before the kill exceeds its budget (slow validations count
    in Lightning's timer, not in the budget): the relaunch trains exactly the planned steps (the plan came with the
    checkpoint; Lightning's restored timer does not stop it), the one-cycle ends at its last step, and
    metrics.csv holds every epoch once."""
    run = tmp_path / "run"
    common = [
        "model=mlp",
        "model.depth=1",
        "model.width=8",
        "data.n_train=160",
        "data.n_val=16",
        "data.batch_size=16",
        "progress=none",
        "callbacks=[default,time_budget]",
        "callbacks.time_budget.measure_steps=4",
        "callbacks.time_budget.skip_steps=1",
        "trainer.max_time=00:00:00:02",
        "trainer.max_epochs=1000",
        "task.scheduler._target_=torch.optim.lr_scheduler.OneCycleLR",
        "+task.scheduler.max_lr=0.05",
        "+callbacks.pace._target_=problems.Pace",
        "+callbacks.pace.seconds_per_step=0.05",
        "+callbacks.pace.seconds_per_val_batch=0.6",
        f"hydra.run.dir={run}",
    ]
    proc = cli(tmp_path, *common, background=True)
    start, planned, elapsed = time.monotonic(), None, 0.0
    while time.monotonic() - start < 120 and proc.poll() is None:  # until a checkpoint is past the budget
        time.sleep(0.1)
        try:
            state, planned, elapsed = _checkpoint(run)
        except (FileNotFoundError, RuntimeError, EOFError):
            continue
        if planned and elapsed > 2.0 and _epoch_row_written(run, state["epoch"]):
            break
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state, planned, elapsed = _checkpoint(run)
    assert elapsed > 2.0 and 0 < state["global_step"] < planned  # killed past its budget, its plan unfinished
    relaunch = cli(tmp_path, *common)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert res["resumed_from"] and res["metrics"]["budget/steps_reached"] == planned == res["metrics"]["budget/steps"]
    final, _, _ = _checkpoint(run)
    schedule = final["lr_schedulers"][0]
    assert schedule["total_steps"] == planned and schedule["last_epoch"] == planned  # the one-cycle ran to its end
    import pandas as pd

    rows = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["budget/steps_reached", "epoch"])
    assert rows["epoch"].tolist() == list(range(math.ceil(planned / 10)))  # every epoch once


def test_peak_memory_does_not_count_what_an_earlier_job_freed():
    """A multirun's jobs share one process: heap freed by an earlier job must not count in the next one's peak
    (the budget callback hands freed heap back before it resets the peak mark)."""
    import gc

    from stablenets.callbacks.budget import _reset_peak_rss, _rss_mb

    gc.collect()
    base = _rss_mb("VmRSS")
    blocks = [torch.randn(25_000) for _ in range(5_000)]  # ~500 MB in 100 kB pieces: heap, not mmap
    del blocks
    gc.collect()
    assert _reset_peak_rss()
    assert _rss_mb("VmHWM") < base + 100  # without handing the heap back: ~base + 500
