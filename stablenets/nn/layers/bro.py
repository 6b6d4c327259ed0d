r"""BRO — Block Reflector Orthogonal layers (Lai, Chen, Huang, Hsieh, "Enhancing Certified Robustness via Block
Reflector Orthogonal Layers and Logit Annealing Loss", ICML 2025):

.. math::  W(\omega) = I - 2\,\hat V(\omega)\big(\hat V(\omega)^H \hat V(\omega)\big)^{-1}\hat V(\omega)^H

per frequency, ``V̂(ω)`` the ``C×r`` symbol of a ``k×k`` kernel ``V`` (``C`` channels to rank ``r``).  ``W(ω)`` is the
reflection through the column space of ``V̂(ω)``: Hermitian and unitary for any full-rank ``V̂`` ("approximation
free": one linear solve per frequency, no iteration).  As in the reference code, the Gram matrix is regularised,
``G = V̂ᴴV̂ + 10⁻⁵·mean(diag G)·I`` (the singular values of ``W`` then lie in ``[0.9998, 1]``), the map is applied on
the input zero-padded by ``k//2`` with the output cropped (:mod:`.fourier`; the zero-padded convolution), and
``V`` starts as the identity on its first ``r`` channels (so ``W = diag(−I_r, I)``: a sign flip of the first ``r``
channels).  ``in ≠ out``: ``r = min(in, out)`` and ``W`` is cropped to ``out × in`` (semi-orthogonal).  The
symbol is the centred one of :func:`~.fourier.kernel_symbol` (the reference takes the plain DFT; ``W`` does not
change under a shift of ``V``, and the two differ by a reflection of ``V``'s taps — the same function class).
Bias ``U(±1/√(r k²))``.

Operator and certified bound: ``W(ω)`` as the forward pass applies it, ``max_ω ‖W(ω)‖`` (1 up to rounding).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .fourier import FourierLayer

#: the Gram matrix's regularisation, relative to its mean diagonal (the reference's LipConvNet layer)
GRAM_EPS = 1e-5


class BROConv2d(FourierLayer):
    """Block reflector orthogonal convolution.

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        rank: the reflector's rank ``r``, as a fraction of the channels (equal channels; BRONet's 0.5).
        padding_mode: ``"zeros"`` (the reference's) or ``"circular"``.

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    repr_fields = ("rank",)

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        rank: float = 0.5,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        self._fourier()
        if not 0 < rank <= 1:
            raise ValueError(f"rank is a fraction of the channels in (0, 1], got {rank}")
        c_in = in_shape[0]
        c = max(c_in, out_channels)
        r = max(1, int(rank * c)) if c_in == out_channels else min(c_in, out_channels)
        if r >= c:
            r = c - 1 if c > 1 else 1  # a reflector of full rank is -I: keep one direction
        self.channels, self.r, self.rank = c, r, rank
        v = torch.zeros(c, r, kernel_size, kernel_size)
        v[torch.arange(r), torch.arange(r), kernel_size // 2, kernel_size // 2] = 1.0  # the reference's identity
        self.weight = nn.Parameter(v)
        bound = 1 / math.sqrt(r * kernel_size**2)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def symbol(self) -> torch.Tensor:
        """``W(ω)[:out, :in]``, ``(Hg, Wg//2 + 1, out, in)`` complex."""
        v = self.kernel_symbol(self.weight)  # (Hg, Wr, C, r)
        gram = v.mH @ v
        diag = gram.diagonal(dim1=-2, dim2=-1).real.mean(-1)
        eye_r = torch.eye(self.r, dtype=gram.dtype, device=gram.device)
        gram = gram + (GRAM_EPS * diag).clamp_min(1e-30)[..., None, None] * eye_r  # (a vanished V: still solvable)
        eye = torch.eye(self.channels, dtype=gram.dtype, device=gram.device)
        w = eye - 2 * v @ torch.linalg.solve(gram, v.mH)
        return w[..., : self.out_shape[0], : self.in_shape[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        y = self.apply_symbol(x, self.symbol())
        return y if self.bias is None else y + self.bias[:, None, None]

    def plain(self) -> nn.Module:
        return self.plain_map(self.eval_operator(), self.bias)
