"""Jacobian norms through depth during training (Figure 2 right, Figure 4 bottom row).

For a fixed test point, the spectral norm of ``∂x_{ℓ+1}/∂x_j`` — the last hidden state with respect to
each earlier hidden state ``j = 1, …, ℓ`` — logged every ``every_n_steps`` optimizer steps.  By eq. (22)
these are ≥ 1 for a stack of symplectic layers; for a deep MLP they collapse (vanishing gradients).
"""

from __future__ import annotations

from pathlib import Path

import lightning as pl
import torch
from torch.autograd.functional import jacobian

from ..contracts import HiddenStates


def jacobian_norms(net: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """``[‖∂x_{ℓ+1}/∂x_j‖₂ for j = 1..ℓ]`` at the single input ``x`` (shape ``(1, …)``)."""
    states = net.hidden_states(x)
    norms = []
    for j in range(len(net.layers)):

        def tail(z, j=j):
            for layer in net.layers[j:]:
                z = layer(z)
            return z

        jac = jacobian(tail, states[j].detach()).reshape(states[-1].numel(), states[j].numel())
        norms.append(float(torch.linalg.matrix_norm(jac, 2)))
    return norms


class JacobianNormCallback(pl.Callback):
    def __init__(self, every_n_steps: int = 10, point_index: int = 0, output_dir: str | None = None) -> None:
        self.every, self.point_index, self.output_dir = every_n_steps, point_index, output_dir
        self.history: list[tuple[int, list[float]]] = []
        self._point: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(pl_module.net, HiddenStates) or dm is None or dm.test_set is None:
            return
        dm.setup("test")
        self._point = dm.test_set[self.point_index][0].unsqueeze(0).to(pl_module.device)
        if not self.history:  # the initial point; a resumed run has it from its checkpoint
            self._record(trainer, pl_module, log=False)  # Lightning does not take step logs here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._point is not None and trainer.global_step % self.every == 0:
            self._record(trainer, pl_module)

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run keeps the history of earlier segments
        return {"history": [(s, list(n)) for s, n in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [(int(s), list(n)) for s, n in state_dict.get("history", [])]

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, log: bool = True) -> None:
        if self.history and self.history[-1][0] == trainer.global_step:
            return
        with torch.enable_grad():
            norms = jacobian_norms(pl_module.net, self._point)
        self.history.append((trainer.global_step, norms))
        if log:
            pl_module.log_dict(
                {f"jacobian/layer_{j + 1}": v for j, v in enumerate(norms)}, on_step=True, on_epoch=False
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history or self.output_dir is None or not trainer.is_global_zero:
            return
        import pandas as pd

        from ..plotting.figures import plot_jacobian_norms

        out = Path(self.output_dir)
        rows = [{"step": s, **{f"layer_{j + 1}": v for j, v in enumerate(n)}} for s, n in self.history]
        pd.DataFrame(rows).to_csv(out / "jacobian_norms.csv", index=False)
        plot_jacobian_norms(self.history, out / "jacobian_norms.png")
