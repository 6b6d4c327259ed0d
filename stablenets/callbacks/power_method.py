"""Keep the power-method estimates of eq. (31) current: one warm-started iteration after every optimizer step.

Section 6: "Before passing to the next minibatch ... we update our estimates of the spectral norms of the
weights using the power method ... warm-start ... a single iteration".  A single iteration can lag behind
the true norm while the learning rate rises (the estimate of ``‖A‖`` creeps up while the weight runs away),
and the block is then not 1-Lipschitz *in training*.  Two guards:

* after the first ``n_iters`` iterations, keep iterating while the estimate still moves by more than
  ``tol`` (relative), up to ``max_iters`` — a warm start that is on target stops after one iteration;
* every ``check_every_n_steps`` steps, compare the estimate with the layer's certified upper bound; when
  ``bound/estimate`` has grown by more than ``check_slack`` over its value for a converged estimate (the
  bound's own excess, ~1% for 28×28 convolutions), re-converge the power method (``power/corrections``);
* with ``project`` (default), a layer that rescales its weight to a norm cap in the forward pass (normalised
  lifting layers, capped gradient-flow blocks) gets its stored weight projected back to the cap
  (``SpectrallyTracked.project_``: same function, but the stored weight cannot inflate and so slow down
  every later update of the effective weight; ``power/projections``);
* at every validation, compare the estimate with a converged power method and log the gap
  (``power/gap_max``), then adopt the converged estimate.

Eval-mode forwards never depend on these estimates: they use certified bounds (see ``SpectrallyTracked``).
"""
from __future__ import annotations

import time

import lightning as L
import torch

from ..nn.constrained import SpectrallyTracked
from ..nn.blocks import _GradientFlowBlock


def tracked_modules(module: torch.nn.Module) -> list[tuple[str, SpectrallyTracked]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, SpectrallyTracked)]


class PowerMethodCallback(L.Callback):
    def __init__(self, n_iters: int = 1, tol: float = 1e-3, max_iters: int = 20, converge_iters: int = 500,
                 log_every_n_steps: int = 50, check_every_n_steps: int = 50, check_slack: float = 0.02,
                 project: bool = True, record_substeps: bool = False) -> None:
        if n_iters < 1 or max_iters < n_iters:
            raise ValueError(f"need 1 <= n_iters <= max_iters, got n_iters={n_iters}, max_iters={max_iters}")
        self.n_iters, self.tol, self.max_iters = n_iters, tol, max_iters
        self.converge_iters, self.log_every = converge_iters, log_every_n_steps
        self.check_every, self.check_slack = check_every_n_steps, check_slack
        self._excess: dict[str, float] = {}  # bound / converged estimate, per layer
        self.corrections = 0
        self.project, self.projections = project, 0
        self._last_step = -1
        self.seconds = 0.0  # time spent in this callback (benchmarks report its share of the epoch)
        self.iterations = 0
        self.updates = 0
        self.record_substeps = record_substeps  # benchmarks: n of every gradient-flow block after every update
        self.substeps: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:  # no optimizer step (gradient accumulation)
            return
        self._last_step = trainer.global_step
        t0 = time.perf_counter()
        for _, m in tracked_modules(pl_module):
            self.iterations += m.update_norm_estimate(self.n_iters, self.tol, self.max_iters)
            if self.project:
                self.projections += m.project_()
            if self.record_substeps and isinstance(m, _GradientFlowBlock):
                self.substeps.append(m.n_steps)
        self.updates += 1
        if self.check_every and trainer.global_step % self.check_every == 0:
            self._check_against_bounds(pl_module)
        self.seconds += time.perf_counter() - t0
        if trainer.global_step % self.log_every == 0:
            self._log(pl_module)

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run checks exactly as an uninterrupted one
        return {"excess": dict(self._excess), "corrections": self.corrections}

    def load_state_dict(self, state_dict: dict) -> None:
        self._excess = dict(state_dict.get("excess", {}))
        self.corrections = int(state_dict.get("corrections", 0))

    @torch.no_grad()
    def _check_against_bounds(self, pl_module: L.LightningModule) -> None:
        for name, m in tracked_modules(pl_module):
            excess = float(m.norm_bound()) / max(float(m.sigma), 1e-12)
            if excess > self._excess.get(name, 1.0) * (1 + self.check_slack):
                m.update_norm_estimate(n_iters=10, tol=1e-7, max_iters=self.converge_iters)
                self._excess[name] = float(m.norm_bound()) / max(float(m.sigma), 1e-12)
                self.corrections += 1

    def _log(self, pl_module: L.LightningModule) -> None:
        metrics = {}
        for name, m in tracked_modules(pl_module):
            metrics[f"power/sigma/{name}"] = float(m.sigma)
            if isinstance(m, _GradientFlowBlock):
                metrics[f"power/n_steps/{name}"] = float(m.n_steps)
        if metrics:
            metrics["power/corrections"] = float(self.corrections)
            metrics["power/projections"] = float(self.projections)
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @torch.no_grad()
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        gaps = []
        for _, m in tracked_modules(pl_module):
            before = float(m.sigma)
            m.update_norm_estimate(n_iters=10, tol=1e-7, max_iters=self.converge_iters)
            gaps.append(float(m.sigma) / max(before, 1e-12) - 1.0)
        if gaps:
            pl_module.log("power/gap_max", max(gaps), on_step=False, on_epoch=True)
