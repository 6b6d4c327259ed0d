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
4. every ``check_every_n_steps`` steps, ``check_iters`` more warm-started iterations are run for all layers
   at once; an estimate they raise by more than ``check_slack`` (relative) had fallen behind — the single
   iteration can, while the learning rate rises — and is re-converged (``power/corrections``).  A lag shows
   this way: an estimate well below ``‖A‖`` means ``u`` carries much weight on directions whose singular
   values are well below the top one, and those die out within a few iterations (a direction near the top
   one moves the estimate little, and leaves it close).  It costs a few single-image products per layer
   every 50 steps, where a comparison with the certified bound (an eigensolve per Fourier frequency) cost
   more than the per-step updates themselves;
5. every ``certify_every_n_steps`` steps and at every validation, each estimate is compared with its certified
   norm: one more than ``check_slack`` below it (beyond the gap this layer's certified bound is known to leave,
   measured when it was last re-converged from noise: zero-padded convolutions' bounds are loose on small grids)
   is stuck — ``u`` has lost (to rounding, or to subnormals flushed to zero) its weight on the direction that is
   now the top one, so no warm-started iteration can find it — and restarts from noise (``power/restarts``).
   Without this a layer can train for ever on an estimate of half its norm, with a step its certified
   evaluation does not take;
6. at every validation the estimates are re-converged (all layers together) and the gap logged
   (``power/gap_max``).

None of this certifies anything: eval-mode forwards and every reported bound use certified norms that
are recomputed whenever the weights change (see ``stablenets.nn.spectral``).
"""

from __future__ import annotations

import lightning as pl
import torch

from ..nn.gradient_flow import GradientFlowBlock
from ..nn.spectral import SpectralOperator, power_steps, project_all
from ..ranks import is_distributed
from ..tasks.base import Task


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
            t.copy_(flat[i : i + t.numel()].view_as(t))
            i += t.numel()


class PowerMethodCallback(pl.Callback):
    def __init__(
        self,
        n_iters: int = 1,
        tol: float = 1e-3,
        max_iters: int = 1,
        converge_iters: int = 500,
        log_every_n_steps: int = 50,
        check_every_n_steps: int = 50,
        check_slack: float = 0.02,
        project: bool = True,
        check_iters: int = 5,
        converge_tol: float = 1e-6,
        certify_every_n_steps: int = 200,
    ) -> None:
        if n_iters < 1 or max_iters < n_iters:
            raise ValueError(f"need 1 <= n_iters <= max_iters, got n_iters={n_iters}, max_iters={max_iters}")
        self.n_iters, self.tol, self.max_iters = n_iters, tol, max_iters
        self.converge_iters, self.log_every = converge_iters, log_every_n_steps
        if check_iters < 1:
            raise ValueError(f"check_iters must be >= 1, got {check_iters}")
        self.check_every, self.check_slack, self.check_iters = check_every_n_steps, check_slack, check_iters
        self.converge_tol = converge_tol
        self.project = project
        self.certify_every = certify_every_n_steps
        self.corrections = 0
        self.restarts = 0  # estimates found stuck below their certified norm and restarted from noise
        self._gaps: dict[int, float] = {}  # id(op) -> certified norm / converged estimate when last restarted
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
            self._check_lag(pl_module)
        if self.certify_every and trainer.global_step % self.certify_every == 0:
            self._check_stuck(pl_module)
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
        ops, _ = self._modules(module)
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
            now = self._estimates(ops)
        self._refresh(module, now)  # from the estimates before projection: the same sub-step counts
        if self.project:
            self.projections += project_all(ops, now)

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run counts on from where it stopped
        return {"corrections": self.corrections, "restarts": self.restarts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.corrections = int(state_dict.get("corrections", 0))  # ("excess": checkpoints of the bound check)
        self.restarts = int(state_dict.get("restarts", 0))

    @staticmethod
    def _estimates(ops: list[SpectralOperator]) -> list[float]:
        return torch.stack([m.norm_estimate for m in ops]).tolist()

    @torch.no_grad()
    def _check_lag(self, module: torch.nn.Module) -> None:
        """Step 4 of the module docstring."""
        ops, _ = self._modules(module)
        if not ops:
            return
        before = self._estimates(ops)
        for _ in range(self.check_iters):
            power_steps(ops)
        lagging = [m for m, a, b in zip(ops, self._estimates(ops), before) if a > b * (1 + self.check_slack)]
        self.corrections += len(lagging)
        self._converge(lagging)
        self._sync(module)  # the check moved every estimate

    @torch.no_grad()
    def _check_stuck(self, module: torch.nn.Module) -> None:
        """Step 5 of the module docstring: estimates stuck below their certified norms restart from noise."""
        ops, _ = self._modules(module)
        if not ops:
            return
        if isinstance(module, Task):
            module.check_finite()  # a diverged run stops with that message, not in an SVD of non-finite weights
        stuck = [
            m
            for m, e in zip(ops, self._estimates(ops))
            if float(m.certified_norm()) > max(e, 1e-12) * self._gaps.get(id(m), 1.0) * (1 + self.check_slack)
        ]
        if not stuck:
            return
        for m in stuck:
            m.u.normal_()
        self.restarts += len(stuck)
        self._converge(stuck)
        for m, e in zip(stuck, self._estimates(stuck)):
            self._gaps[id(m)] = max(1.0, float(m.certified_norm()) / max(e, 1e-12))
        self._sync(module)

    def _refresh(self, module: torch.nn.Module, estimates: list[float]) -> None:
        """The blocks' training sub-step counts from the estimates of the model's operators."""
        for block, i in self._modules(module)[1]:
            block.refresh_substeps(estimates[i])

    def _sync(self, module: torch.nn.Module) -> list[float]:
        """After estimates moved outside the per-step update: every rank takes rank 0's (DDP), the sub-step
        counts follow.  Returns the estimates."""
        ops, _ = self._modules(module)
        broadcast_state(ops)
        now = self._estimates(ops)
        self._refresh(module, now)
        return now

    @torch.no_grad()
    def _converge(self, ops: list[SpectralOperator]) -> None:
        """Re-converge the estimates of ``ops`` together: batched warm-started iterations until each moves by
        at most ``converge_tol`` (relative) in one, up to ``converge_iters``; only the moving ones go on."""
        if not ops:
            return
        for m, e in zip(ops, self._estimates(ops)):
            if e < 1e-6:  # u in the null space would never leave it (power_steps keeps it): restart from noise
                m.u.normal_()
        for _ in range(10):
            power_steps(ops)
        prev = self._estimates(ops)
        moving, its = list(range(len(ops))), 10
        while moving and its < self.converge_iters:
            power_steps([ops[i] for i in moving])
            its += 1
            now = self._estimates(ops)
            moving = [i for i in moving if abs(now[i] - prev[i]) > self.converge_tol * max(now[i], 1e-12)]
            prev = now

    def _log(self, pl_module: pl.LightningModule) -> None:
        metrics = {f"power/norm_estimate/{name}": float(m.norm_estimate) for name, m in tracked_modules(pl_module)}
        metrics.update({f"power/n_steps/{name}": float(b.n_steps) for name, b in _blocks(pl_module)})
        if metrics:
            metrics["power/corrections"] = float(self.corrections)
            metrics["power/restarts"] = float(self.restarts)
            metrics["power/projections"] = float(self.projections)
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @torch.no_grad()
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        ops, _ = self._modules(pl_module)
        if not ops:
            return
        self._check_stuck(pl_module)
        before = self._estimates(ops)
        self._converge(ops)
        gaps = [a / max(b, 1e-12) - 1.0 for a, b in zip(self._sync(pl_module), before)]
        if gaps:
            pl_module.log("power/gap_max", max(gaps), on_step=False, on_epoch=True, sync_dist=True)
