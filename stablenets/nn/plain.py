"""Plain networks: a trained net with every constrained layer replaced by the standard layer computing its
eval-mode map (a :class:`~stablenets.contracts.Exportable` module's ``plain()``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..contracts import Exportable


def freeze(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode with every :class:`~stablenets.contracts.Exportable` part replaced by its
    ``plain()`` form: the forward pass reads no norm, runs no check and has no data-dependent branch, so
    ``torch.export`` and ONNX take it; no parameter requires a gradient."""
    frozen = copy.deepcopy(net).eval()

    def swap(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, Exportable):
                setattr(module, name, child.plain().eval())
            else:
                swap(child)

    with torch.no_grad():
        if isinstance(frozen, Exportable):
            frozen = frozen.plain().eval()
        else:
            swap(frozen)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen
