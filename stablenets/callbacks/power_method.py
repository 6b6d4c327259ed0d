"""Keep the power-method estimates of eq. (31) current: one warm-started iteration after every optimizer step.

Section 6: "Before passing to the next minibatch ... we update our estimates of the spectral norms of the
weights using the power method ... warm-start ... a single iteration".  After every optimizer step, for
every :class:`~stablenets.nn.spectral.SpectralOperator` of the model:

1. ``n_iters`` warm-started iterations (default 1: the paper's "single iteration"), the element-wise work
   of all layers batched (:func:`~stablenets.nn.spectral.power_steps`); with ``max_iters > n_iters``, each
   estimate that still moved by more than ``tol`` (relative) gets another one, up to ``max_iters``.  One
   host synchronisation per step reads the estimates (and checks the tolerance), which set the training
   sub-step counts of the gradient-flow blocks (their forward never reads a device value);
2. under DDP, the estimates and vectors are broadcast from rank 0, so every rank holds the same state;
3. with ``project`` (default), a layer that rescales its weight to a norm cap in the forward pass gets its
   stored weight projected back to the cap (``SpectralOperator.project_``: same function, but the stored
   weight cannot inflate and so slow down every later update of the effective weight); the estimates read
   in step 1 decide on the host which weights move, so a step where none exceeds its cap costs nothing here;
4. every ``check_every_n_steps`` steps, the estimate is compared with the layer's certified upper bound;
   when ``bound/estimate`` has grown by more than ``check_slack`` over its value for a converged estimate
   (the bound's own excess, ~1% for 28×28 convolutions), the power method is re-converged
   (``power/corrections``) — the single iteration can fall behind while the learning rate rises;
5. at every validation the estimate is re-converged and the gap logged (``power/gap_max``).

None of this certifies anything: eval-mode forwards and every reported bound use certified norms that
are recomputed whenever the weights change (see ``stablenets.nn.spectral``).
"""
from __future__ import annotations

import lightning as pl
import torch

from ..nn.gradient_flow import GradientFlowBlock
from ..nn.spectral import SpectralOperator, power_steps, project_all
from ..ranks import is_distributed


def tracked_modules(module: torch.nn.Module) -> list[tuple[str, SpectralOperator]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, SpectralOperator)]


def _blocks(module: torch.nn.Module) -> list[tuple[str, GradientFlowBlock]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, GradientFlowBlock)]


@torch.no_grad()
def broadcast_state(ops: list[SpectralOperator]) -> None:
    """Every rank takes rank 0's ``u`` and ``norm_estimate`` (one collective for all layers)."""
    if not ops or not is_distributed():
        return
    flat = torch.cat([t.reshape(-1) for m in ops for t in (m.u, m.norm_estimate.reshape(1))])
    torch.distributed.broadcast(flat, src=0)
    i = 0
    for m in ops:
        for t in (m.u, m.norm_estimate):
            t.copy_(flat[i:i + t.numel()].view_as(t))
            i += t.numel()


class PowerMethodCallback(pl.Callback):
    def __init__(self, n_iters: int = 1, tol: float = 1e-3, max_iters: int = 1, converge_iters: int = 500,
                 log_every_n_steps: int = 50, check_every_n_steps: int = 50, check_slack: float = 0.02,
                 project: bool = True) -> None:
        if n_iters < 1 or max_iters < n_iters:
            raise ValueError(f"need 1 <= n_iters <= max_iters, got n_iters={n_iters}, max_iters={max_iters}")
        self.n_iters, self.tol, self.max_iters = n_iters, tol, max_iters
        self.converge_iters, self.log_every = converge_iters, log_every_n_steps
        self.check_every, self.check_slack = check_every_n_steps, check_slack
        self.project = project
        self._excess: dict[str, float] = {}  # certified bound / converged estimate, per layer
        self.corrections = 0
        self.projections = 0  # weights rescaled to their cap, summed over steps
        self._found: tuple | None = None  # (model, its operators, its blocks): see _modules
        self._last_step = -1
        self.iterations = 0  # rounds of power iterations, summed over steps (work measure)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:  # no optimizer step (gradient accumulation)
            return
        self._last_step = trainer.global_step
        self.update(pl_module)
        if self.check_every and trainer.global_step % self.check_every == 0:
            self._check_against_bounds(pl_module)
        if trainer.global_step % self.log_every == 0:
            self._log(pl_module)

    def _modules(self, module: torch.nn.Module) -> tuple[list[SpectralOperator], list[tuple[GradientFlowBlock, int]]]:
        """The model's tracked operators and its gradient-flow blocks with the index of their operator, found once
        per model (a walk of the module tree costs as much as a layer's power step)."""
        if self._found is None or self._found[0] is not module:
            ops = [m for _, m in tracked_modules(module)]
            index = {id(m): i for i, m in enumerate(ops)}
            blocks = [(b, index[id(b.op)]) for _, b in _blocks(module) if id(b.op) in index]
            self._found = (module, ops, blocks)
        return self._found[1], self._found[2]

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Steps 1-3 of the module docstring, and the blocks' training sub-step counts."""
        ops, blocks = self._modules(module)
        if not ops:
            return
        before = torch.stack([m.norm_estimate for m in ops]) if self.max_iters > self.n_iters else None
        for _ in range(self.n_iters):
            power_steps(ops)
        its, moving = self.n_iters, list(range(len(ops)))
        while True:
            now = torch.stack([m.norm_estimate for m in ops])
            if before is None:  # one iteration per step (the paper's protocol): nothing to compare
                now = now.tolist()  # the one host synchronisation
                break
            now, prev = torch.stack([now, before]).tolist()  # one synchronisation
            moving = [i for i in moving if abs(now[i] - prev[i]) > self.tol * max(now[i], 1e-12)]
            if its >= self.max_iters or not moving:
                break
            before = torch.tensor(now, device=before.device, dtype=before.dtype)
            power_steps([ops[i] for i in moving])  # only the estimates that still move take another iteration
            its += 1
        self.iterations += its
        if is_distributed():
            broadcast_state(ops)
            now = torch.stack([m.norm_estimate for m in ops]).tolist()
        for block, i in blocks:  # from the estimates before projection: the same sub-step counts
            block.refresh_substeps(now[i])
        if self.project:
            self.projections += project_all(ops, now)

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run checks exactly as an uninterrupted one
        return {"excess": dict(self._excess), "corrections": self.corrections}

    def load_state_dict(self, state_dict: dict) -> None:
        self._excess = dict(state_dict.get("excess", {}))
        self.corrections = int(state_dict.get("corrections", 0))

    @torch.no_grad()
    def _check_against_bounds(self, pl_module: pl.LightningModule) -> None:
        for name, m in tracked_modules(pl_module):
            excess = float(m.certified_norm()) / max(float(m.norm_estimate), 1e-12)
            if excess > self._excess.get(name, 1.0) * (1 + self.check_slack):
                self._converge(pl_module, m)
                self._excess[name] = float(m.certified_norm()) / max(float(m.norm_estimate), 1e-12)
                self.corrections += 1

    def _converge(self, module: torch.nn.Module, m: SpectralOperator) -> None:
        m.update_norm_estimate(n_iters=10, tol=1e-7, max_iters=self.converge_iters)
        broadcast_state([m])
        for block, i in self._modules(module)[1]:
            if block.op is m:
                block.refresh_substeps()

    def _log(self, pl_module: pl.LightningModule) -> None:
        metrics = {f"power/norm_estimate/{name}": float(m.norm_estimate) for name, m in tracked_modules(pl_module)}
        metrics.update({f"power/n_steps/{name}": float(b.n_steps) for name, b in _blocks(pl_module)})
        if metrics:
            metrics["power/corrections"] = float(self.corrections)
            metrics["power/projections"] = float(self.projections)
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @torch.no_grad()
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        gaps = []
        for _, m in tracked_modules(pl_module):
            before = float(m.norm_estimate)
            self._converge(pl_module, m)
            gaps.append(float(m.norm_estimate) / max(before, 1e-12) - 1.0)
        if gaps:
            pl_module.log("power/gap_max", max(gaps), on_step=False, on_epoch=True, sync_dist=True)
