r"""Classification losses, for accuracy and for certified robustness.  Each maps ``(logits, y)`` to a scalar.

For an ``L``-Lipschitz net, certifying radius ``ε`` at ``x`` needs a logit margin of at least ``√2·L·ε``
(Example 2); the certified-training losses ask for such a margin at training time:

* :class:`CrossEntropy`;
* :class:`MultiMargin` — the multi-class hinge of Section 6.2: ``(1/C) Σ_{j≠y} max(0, m − z_y + z_j)``;
* :class:`OffsetCrossEntropy` — ``T · CE((z − u·onehot(y)) / T)`` (AOL, Prach & Lampert; "1-Lipschitz layers
  compared"): the true logit must beat the others by the offset ``u`` before the loss flattens, ``T`` sets
  how sharply; ``u = √2·L·ε`` targets radius ``ε``;
* :class:`HKR` — deel-lip's hinge-Kantorovich-Rubinstein loss (deel-torchlip 1.0.x ``HKRMulticlassLoss``):
  ``α·hinge − (1−α)·KR``, the hinge pushing the true logit above ``m/2`` and the others below ``−m/2``
  (weighted ``C−1`` to 1), KR the mean over classes of ``E_{y=c} z_c − E_{y≠c} z_c`` on the batch;
* :class:`CertifiedHinge` — ``max(0, √2·L·ε − (z_y − max_{j≠y} z_j))``: a hinge whose margin is the one
  that certifies the target radius ``ε``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_positive


class CrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)


class MultiMargin(nn.Module):
    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        check_positive(margin=margin)
        self.margin = margin

    def forward(self, logits, y):
        return F.multi_margin_loss(logits, y, margin=self.margin)


class OffsetCrossEntropy(nn.Module):
    def __init__(
        self,
        offset: float | None = None,
        temperature: float = 0.25,
        target_radius: float | None = None,
        lipschitz: float = 1.0,
    ) -> None:
        super().__init__()
        if (offset is None) == (target_radius is None):
            raise ValueError(
                "set exactly one of offset and target_radius (offset = sqrt(2) * lipschitz * target_radius)"
            )
        offset = math.sqrt(2) * lipschitz * target_radius if offset is None else offset
        check_positive(offset=offset, temperature=temperature, lipschitz=lipschitz)
        self.offset, self.temperature = float(offset), float(temperature)

    def forward(self, logits, y):
        shifted = logits - self.offset * F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return self.temperature * F.cross_entropy(shifted / self.temperature, y)


class HKR(nn.Module):
    def __init__(self, alpha: float = 0.99, min_margin: float = 0.25) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        check_positive(min_margin=min_margin)
        self.alpha, self.min_margin = float(alpha), float(min_margin)

    def hinge(self, logits, y):
        c = logits.shape[1]
        onehot = F.one_hot(y, c).to(logits.dtype)
        sign = 2 * onehot - 1
        h = F.relu(self.min_margin / 2 - sign * logits)
        return (h * (onehot * (c - 2) + 1)).mean(1).mean()  # the true class weighted C-1, the others 1

    def kr(self, logits, y):
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        share = onehot.mean(0)  # fraction of the batch in each class
        pos = (onehot * logits).sum(0) / (share * len(y)).clamp_min(1)  # E_{y=c} z_c
        neg = ((1 - onehot) * logits).sum(0) / ((1 - share) * len(y)).clamp_min(1)  # E_{y≠c} z_c
        present = (share > 0) & (share < 1)
        return ((pos - neg) * present).sum() / logits.shape[1]

    def forward(self, logits, y):
        return self.alpha * self.hinge(logits, y) - (1 - self.alpha) * self.kr(logits, y)


class CertifiedHinge(nn.Module):
    def __init__(self, target_radius: float = 0.5, lipschitz: float = 1.0) -> None:
        super().__init__()
        check_positive(target_radius=target_radius, lipschitz=lipschitz)
        self.margin = math.sqrt(2) * lipschitz * target_radius

    def forward(self, logits, y):
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return F.relu(self.margin - (true - other)).mean()
