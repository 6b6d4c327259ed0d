"""Common pieces of the models: the lift → layers → head stack on flattened inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["StackedNet"]


class StackedNet(nn.Module):
    """``head ∘ Φ_ℓ ∘ … ∘ Φ_1 ∘ lift`` on flattened inputs.

    ``lift`` maps the input to the working dimension (identity when they agree, otherwise a linear
    layer); the hidden states ``x_1 = lift(x), x_{j+1} = Φ_j(x_j)`` are exposed for Jacobian studies.
    """

    def __init__(self, in_shape: tuple[int, ...], width: int, layers: list[nn.Module], out_dim: int) -> None:
        super().__init__()
        in_dim = math.prod(in_shape)
        self.in_dim, self.width = in_dim, width
        self.lift = nn.Identity() if in_dim == width else nn.Linear(in_dim, width)
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(width, out_dim)

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x_1, …, x_{ℓ+1}]``: the lifted input and the output of each layer."""
        states = [self.lift(x.flatten(1))]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return states

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Φ_ℓ ∘ … ∘ Φ_1 ∘ lift`` (everything before the head)."""
        return self.hidden_states(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
