"""The progress lines a run prints where no terminal shows a bar: what a line reports."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from stablenets.models import InvNet
from stablenets.runner.progress import ProgressLines


def _inflated(max_norm, std=3.0, seed=0) -> InvNet:
    torch.manual_seed(seed)
    net = InvNet((2,), 2, L=1.0, max_norm=max_norm)
    with torch.no_grad():
        for b in net.layers:
            b.op.weight.normal_(0, std)
            b.op.update_norm_estimate(n_iters=200)
            b.refresh_substeps()
    return net


def test_progress_line_reports_the_substep_sum(capsys):
    net = _inflated(3.0)
    trainer = SimpleNamespace(
        callback_metrics={}, max_epochs=1, current_epoch=0, num_training_batches=1, global_step=7, is_global_zero=True
    )
    ProgressLines()._line(trainer, net.train(), final=True)
    n = [b.n_steps for b in net.layers]
    assert f"sub-steps {'+'.join(map(str, n))}={sum(n)}" in capsys.readouterr().out
