r"""Feed-forward and residual layers of Sections 1 and 4 (unconstrained: no Lipschitz bound is claimed).

* :class:`MLPLayer`           — ``σ(Az + b)`` (eq. 1, ``form='one_matrix'``) or ``Bᵀσ(Az + b)`` (Section 4,
  ``form='two_matrix'``, ``A: dim → hidden``, ``B: hidden × dim``)
* :class:`ResidualLayer`      — ``z + σ(Az + b)`` (eq. 2) or the explicit Euler step ``z + h Bᵀσ(Az + b)``
* :class:`ResidualBlock`      — ``x + B σ(Ax + b)`` (snippet 2), dense
* :class:`ConvResidualBlock`  — the same with convolutions
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_positive
from .activations import get_activation
from .convolution import channels_last_on_cpu

FORMS = ("two_matrix", "one_matrix")


class MLPLayer(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "tanh", form: str = "two_matrix") -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.sigma, _ = get_activation(activation)
        self.form = form
        self.A = nn.Linear(dim, dim if form == "one_matrix" else hidden)
        self.B = nn.Linear(dim, hidden, bias=False) if form == "two_matrix" else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.sigma(self.A(z))
        return s if self.B is None else s @ self.B.weight


class ResidualLayer(nn.Module):
    def __init__(
        self, dim: int, hidden: int, activation: str = "tanh", h: float = 1.0, form: str = "two_matrix"
    ) -> None:
        super().__init__()
        check_positive(h=h)
        self.body = MLPLayer(dim, hidden, activation, form)
        self.h = h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.h * self.body(z)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.sigma, _ = get_activation(activation)
        self.A = nn.Linear(dim, hidden)
        self.B = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.B(self.sigma(self.A(x)))


class ConvResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, activation: str = "relu", kernel_size: int = 3) -> None:
        super().__init__()
        self.sigma, _ = get_activation(activation)
        pad = kernel_size // 2
        self.A = nn.Conv2d(channels, hidden, kernel_size, padding=pad)
        self.B = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_last_on_cpu(x)  # the same layout as the gradient-flow blocks it is compared with
        return x + self.B(self.sigma(self.A(x)))
