"""Common pieces of the models: input flattening, lifting, the hidden-state stack, Lipschitz bounds."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.power import dense_norm_bound


def check_architecture(depth: int, width: int | None = None, **positive: float) -> None:
    """Raise ``ValueError`` naming the offending argument before any layer is built."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lift(x.flatten(1))
        for layer in self.layers:
            z = layer(z)
        return self.head(z)

    def lipschitz_bound(self) -> float:
        """Product of the parts' certified bounds (``inf`` when a part has none)."""
        return math.prod(part_bound(m) for m in (self.lift, *self.layers, self.head))


def part_bound(module: nn.Module) -> float:
    """Certified Lipschitz bound of one part: its own ``lipschitz_bound()``, exact for linear/pooling maps."""
    if hasattr(module, "lipschitz_bound"):
        return float(module.lipschitz_bound())
    if isinstance(module, (nn.Identity, nn.Flatten, nn.MaxPool2d)):
        return 1.0
    if isinstance(module, nn.AvgPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        if s == k:  # disjoint windows: each output averages k² inputs
            return 1.0 / k
        return 1.0
    if isinstance(module, nn.Linear):
        return float(dense_norm_bound(module.weight))
    if isinstance(module, nn.Sequential):
        return math.prod(part_bound(m) for m in module)
    return math.inf
