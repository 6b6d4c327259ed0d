"""The capabilities the runner and the tools rely on, as explicit contracts.

A net, a data module or a task *has* a capability when it implements the methods below; nothing is
registered and nothing inherits from these classes.  They are ``runtime_checkable`` protocols, so the
runner asks ``isinstance(net, LipschitzBounded)`` instead of probing attribute names, and a type checker
sees the same contract.  A new architecture that reports a bound implements :class:`LipschitzBounded`;
one with a linear head on a bounded body implements :class:`BoundedBody` too; :class:`PairwiseBounded`
adds the per-pair constants of the certificate ``min_j (z_y − z_j)/K_yj``.

:class:`Evaluation` is what every task's ``evaluate`` returns: its metrics, its robustness curve (when an
attack ran) and the arrays its figures need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class LipschitzBounded(Protocol):
    """A map with a certified upper bound on its Lipschitz constant (float, rounded up; ``inf`` if none)."""

    def lipschitz_bound(self) -> float: ...


@runtime_checkable
class Exportable(Protocol):
    """A constrained layer with a plain form: ``plain()`` returns a standard torch module computing its eval-mode
    map from fixed tensors (no norm read, no check, no complex number), which ``freeze`` and
    ``stablenets-export`` put in its place.  Every layer family, spectral layer and gradient-flow block is one."""

    def plain(self) -> nn.Module: ...


@runtime_checkable
class BoundedBody(Protocol):
    """A classifier ``head ∘ body`` whose feature extractor ``body`` has its own certified bound."""

    body: nn.Module

    def body_bound(self) -> float: ...


@runtime_checkable
class PairwiseBounded(Protocol):
    """A classifier with Lipschitz constants ``K_ij`` of each logit difference ``z_i − z_j`` (``C × C``)."""

    def pairwise_lipschitz(self) -> torch.Tensor: ...


@runtime_checkable
class HiddenStates(Protocol):
    """A stack ``Φ_ℓ ∘ … ∘ Φ_1`` that exposes its hidden states (the Jacobian studies of Figures 2 and 4)."""

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class LyapunovFunction(Protocol):
    """A vector field learned with a Lyapunov function ``V`` and decay rate ``mu`` (Section 5.1)."""

    mu: float

    def V_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class LinearInverseProblem(Protocol):
    """Data of ``y = A x† + noise`` with the forward matrix ``A`` (the Tikhonov baseline needs it)."""

    A: torch.Tensor

    def arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Evaluation:
    """What a task's evaluation found.

    ``metrics``: flat ``split/name`` scalars (``results.json``'s ``metrics``, the loggers);
    ``robustness``: the robustness curve with its certificate audit (``results.json``), when an attack ran;
    ``figures``: arrays the report draws (reconstructions, rollouts), never written to ``results.json``.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    robustness: dict[str, Any] | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def results(self) -> dict[str, Any]:
        """The JSON part, as ``results.json`` holds it next to the metrics."""
        return {} if self.robustness is None else {"robustness": self.robustness}


@runtime_checkable
class Evaluates(Protocol):
    """A task that evaluates a trained net after training (every :class:`stablenets.tasks.Task` does)."""

    def evaluate(self, datamodule: Any, cfg: Any) -> Evaluation: ...
