r"""LOT — Layer-wise Orthogonal Training (Xu, Li, Li, NeurIPS 2022):

.. math::  Q = (V V^H)^{-1/2} V

has orthonormal rows for any full-row-rank ``V`` (``m > n``: ``V(VᴴV)^{-1/2}``, orthonormal columns).
The inverse square root is computed by the coupled Newton–Schulz iteration the paper uses, regularised as the
reference code does: with ``S = (VVᴴ + εI)/c``, ``c = ‖VVᴴ + εI‖_F + ε``, ``ε = 10⁻⁴``, ``Y₀ = S``, ``Z₀ = I``,

.. math::  T_t = \tfrac12 (3I - Z_t Y_t), \qquad Y_{t+1} = Y_t T_t, \qquad Z_{t+1} = T_t Z_t
           \;\to\; Z_\infty = S^{-1/2},

so ``Q ≈ Z_T V/√c``.  On every eigenvalue ``λ ∈ (0, 1]`` of ``S`` the iteration is Newton's method for
``λ^{-1/2}`` from 1, ``z ← z(3 − λz²)/2``, which never overshoots (``z ≤ λ^{-1/2}``): the singular values of
``Q`` approach 1 from below.  ``train_iters`` / ``eval_iters`` iterations (the reference: 10 and 10).

* :class:`LOTLinear` — ``x ↦ Qx + b``;
* :class:`LOTConv2d` — ``Q(ω)`` per frequency (:mod:`.fourier`), ``V(ω)`` the symbol of a centred ``k×k``
  kernel on the input zero-padded by ``k//2`` (the reference's grid; the output cropped), initialised to the
  identity.

Operator and certified bound: ``Q`` (or ``Q(ω)``) as the forward pass applies it, ``max_ω ‖Q(ω)‖``.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LipschitzLayer, plain_linear
from .fourier import FourierLayer


def orthonormalize(v: torch.Tensor, iters: int, eps: float = 1e-4) -> torch.Tensor:
    """``(VVᴴ + εI)^{-1/2} V`` (``m ≤ n``: orthonormal rows; else ``V(VᴴV + εI)^{-1/2}``, orthonormal columns) for a
    batch ``(..., m, n)`` by Newton–Schulz on ``S/c``, ``c = ‖S‖_F + ε`` (the reference code's regularisation)."""
    m, n = v.shape[-2:]
    if m > n:
        return orthonormalize(v.mH, iters, eps).mH
    eye = torch.eye(m, dtype=v.dtype, device=v.device)
    s = v @ v.mH + eps * eye
    c = (torch.linalg.matrix_norm(s) + eps)[..., None, None]  # Frobenius: the spectrum of S/c in (0, 1]
    y = s / c
    eye = eye.expand_as(y)
    z = eye
    for _ in range(iters):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return z @ v / c.sqrt()


class _LOT(LipschitzLayer):
    repr_fields = ("train_iters", "eval_iters")

    def _iters(self, train_iters: int, eval_iters: int) -> None:
        for name, value in (("train_iters", train_iters), ("eval_iters", eval_iters)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.train_iters, self.eval_iters = train_iters, eval_iters

    @property
    def iters(self) -> int:
        return self.train_iters if self.training else self.eval_iters


class LOTLinear(_LOT):
    """Dense LOT.

    Args:
        in_features, out_features: sizes (``out_features`` defaults to ``in_features``).
        bias: learn an additive bias.
        train_iters, eval_iters: Newton–Schulz iterations in training and in eval mode.

    Shape: ``(*, in_features) → (*, out_features)``; initialised orthogonal.
    """

    operator_kind = "matrix"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        bias: bool = True,
        train_iters: int = 10,
        eval_iters: int = 10,
    ) -> None:
        super().__init__()
        in_features, out_features = self._dense(in_features, out_features)
        self._iters(train_iters, eval_iters)
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def operator(self) -> torch.Tensor:
        return orthonormalize(self.weight, self.iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return nn.functional.linear(x, self.operator(), self.bias)

    def plain(self) -> nn.Module:
        return plain_linear(self.eval_operator(), self.bias)


class LOTConv2d(_LOT, FourierLayer):
    """LOT convolution, orthogonal per frequency.

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        train_iters, eval_iters: Newton–Schulz iterations in training and in eval mode.
        padding_mode: ``"zeros"`` (the reference's: the input zero-padded by ``k//2`` to an ``(H+2p)×(W+2p)``
            grid, the output cropped) or ``"circular"`` (on the ``H×W`` torus).

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``; initialised to the identity (as the paper's code).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        train_iters: int = 10,
        eval_iters: int = 10,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        self._fourier()
        self._iters(train_iters, eval_iters)
        w = torch.empty(out_channels, in_shape[0], kernel_size, kernel_size)
        self.weight = nn.Parameter(nn.init.dirac_(w))  # identity init (as the paper's code)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def symbol(self) -> torch.Tensor:
        return orthonormalize(self.kernel_symbol(self.weight), self.iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        y = self.apply_symbol(x, self.symbol())
        return y if self.bias is None else y + self.bias[:, None, None]

    def plain(self) -> nn.Module:
        return self.plain_map(self.eval_operator(), self.bias)
