r"""Certified accuracy on the validation split, for model selection (the comparison selects its learning rate
and weight decay by validation certified accuracy).

:class:`CertifiedValidation` computes, after each validation epoch, the net's certified bound ``L`` (eval
mode) and the fraction of validation images classified correctly with certified radius ``m(x)/(√2 L)`` (or
the model's per-pair radius, ``convention='pairwise'``) above each ε; it logs ``val/certified_acc/eps_<ε>``
and, for the first ε, ``val/certified_acc`` (the metric a hyper-parameter search optimises).  One extra pass
over the validation split per epoch.
"""

from __future__ import annotations

import lightning as pl
import torch

from ..contracts import LipschitzBounded, PairwiseBounded
from ..robustness.certify import certified_accuracy, check_convention


class CertifiedValidation(pl.Callback):
    def __init__(self, eps: list[float] | float = 0.25, convention: str = "sqrt2") -> None:
        super().__init__()
        self.eps = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
        if not self.eps or min(self.eps) < 0:
            raise ValueError(f"eps must be one or more radii >= 0, got {eps}")
        check_convention(convention)
        self.convention = convention

    def _lipschitz(self, net: torch.nn.Module):
        if self.convention == "pairwise":
            if not isinstance(net, PairwiseBounded):
                raise TypeError(f"{type(net).__name__} has no per-pair constants (pairwise_lipschitz)")
            return net.pairwise_lipschitz()
        if not isinstance(net, LipschitzBounded):
            raise TypeError(f"{type(net).__name__} reports no Lipschitz bound: nothing can be certified")
        return float(net.lipschitz_bound())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net  # refuse before training, not after the first epoch
        ok = isinstance(net, PairwiseBounded) if self.convention == "pairwise" else isinstance(net, LipschitzBounded)
        if not ok:
            raise TypeError(
                f"CertifiedValidation: {type(net).__name__} cannot certify (convention {self.convention!r})"
            )

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        net = pl_module.net
        was = net.training
        net.eval()
        try:
            lipschitz = self._lipschitz(net)
            logits, labels = [], []
            for x, y in trainer.val_dataloaders:
                logits.append(net(x.to(pl_module.device)))
                labels.append(y.to(pl_module.device))
        finally:
            net.train(was)
        accs = certified_accuracy(torch.cat(logits), torch.cat(labels), lipschitz, self.eps, self.convention)
        for e, acc in zip(self.eps, accs):
            pl_module.log(f"val/certified_acc/eps_{e:.4g}", acc, sync_dist=True)
        pl_module.log("val/certified_acc", accs[0], sync_dist=True, prog_bar=True)
