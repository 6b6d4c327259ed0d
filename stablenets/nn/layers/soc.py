r"""SOC — Skew Orthogonal Convolutions (Singla & Feizi, ICML 2021):

.. math::  x \mapsto \exp(L)\,x + b \approx \sum_{k=0}^{K} \frac{L^k x}{k!}, \qquad L = -L^\top

``L = c·S/σ``: ``S = (M − Mᵀ)/2`` is skew-symmetric — for a convolution, ``Mᵀ`` is the kernel with channels
swapped and taps reflected, so the stride-1 'same' convolution with kernel ``S`` is a skew-symmetric operator
on the finite grid (zero or circular padding alike) — and ``σ`` is a power-method estimate of ``‖S‖``
(one warm-started iteration per training step, as the reference code; frozen in eval mode), ``c`` the
target norm (``correction``, 0.7 in the reference code).  ``exp(L)`` is orthogonal; the series is
truncated after ``train_terms`` terms in training and ``eval_terms`` in eval mode.  More channels out than
in: the input is zero-padded (an isometry); fewer: the output is truncated (norm ≤ 1).

**Certified bound, truncation included.**  With ``ℓ`` a certified upper bound of ``‖L‖`` (SVD, or the Fourier
symbol on the actual input shape) and ``K = eval_terms``,

.. math::  \Big\|\sum_{k\le K} \frac{L^k}{k!}\Big\| \le \|\exp(L)\| + \Big\|\sum_{k>K}\frac{L^k}{k!}\Big\|
           \le 1 + \sum_{k>K} \frac{\ell^k}{k!},

the tail summed term by term until the ratio of consecutive terms ``ℓ/(k+1)`` is below 1/10, then closed by
the geometric bound.  ``‖exp(L)‖ = 1`` needs ``L`` exactly skew-symmetric; the bound checks this on the
applied tensor (``fl(a − b) = −fl(b − a)``, so it holds in floating point) and otherwise reports the plain
``Σ_{k≤K} ℓ^k/k!``.  With ``ℓ = 0.7`` and ``K = 12`` the tail is ~1e-12.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..norms import CERT_SLACK
from .base import LipschitzLayer, conv_same, detached, flip_transpose


def exp_series_tail(ell: float, K: int) -> float:
    """Upper bound of ``Σ_{k>K} ℓ^k/k!`` (float64, enlarged for rounding)."""
    if ell <= 0:
        return 0.0
    term = math.exp((K + 1) * math.log(ell) - math.lgamma(K + 2))  # ℓ^(K+1)/(K+1)!
    total, k = 0.0, K + 1
    while True:
        total += term
        r = ell / (k + 1)
        if r < 0.1:
            return (total + term * r / (1 - r)) * (1 + 1e-12)
        term *= r
        k += 1


def exp_series_sum(ell: float, K: int) -> float:
    return sum(ell**k / math.factorial(k) for k in range(K + 1)) * (1 + 1e-12)


class _SOC(LipschitzLayer):
    u: torch.Tensor
    repr_fields = ("train_terms", "eval_terms", "correction")

    def _setup(
        self,
        channels: int,
        train_terms: int,
        eval_terms: int,
        correction: float,
        init_iters: int,
        bias: bool,
    ) -> None:
        for name, v in (("train_terms", train_terms), ("eval_terms", eval_terms)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not correction > 0:
            raise ValueError(f"correction must be > 0, got {correction}")
        self.train_terms, self.eval_terms, self.correction = train_terms, eval_terms, float(correction)
        self.channels = channels
        self.bias = nn.Parameter(torch.zeros(self.out_shape[0])) if bias else None
        with torch.no_grad():
            for _ in range(init_iters):
                self._power_step()

    # -- the skew-symmetric operator -----------------------------------------------------------------
    def skew(self) -> torch.Tensor:
        raise NotImplementedError

    def _op(self, x: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _is_skew(skew: torch.Tensor) -> bool:
        raise NotImplementedError

    @torch.no_grad()
    def _power_step(self) -> None:
        s = self.skew()
        w = -self._op(self._op(self.u, s), s)  # SᵀS u = −S² u
        self.u.copy_(w / w.norm().clamp_min(1e-30))

    def operator(self) -> torch.Tensor:
        """``L = c·S/σ``, the skew-symmetric generator the forward pass exponentiates (a power step first, in
        training)."""
        if self.training:
            self._power_step()
        s = self.skew()
        sigma = self._op(self.u, s).norm().clamp_min(1e-12)
        return s * (self.correction / sigma)

    @property
    def terms(self) -> int:
        return self.train_terms if self.training else self.eval_terms

    def _series(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return exp_series(x, self.operator(), self.terms, self._op, dim, self.out_shape[0])

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """``1 + Σ_{k>K} ℓ^k/k!`` (see the module docstring), ``K = eval_terms``, for the eval-mode operator."""
        L = self.eval_operator()
        ell = self.operator_norm(L)
        if self._is_skew(L):
            return (1.0 + exp_series_tail(ell, self.eval_terms)) * (1 + CERT_SLACK)
        return exp_series_sum(ell, self.eval_terms) * (1 + CERT_SLACK)


def exp_series(x: torch.Tensor, L: torch.Tensor, terms: int, op, dim: int, out: int) -> torch.Tensor:
    """``Σ_{k≤K} Lᵏx/k!`` on ``x`` zero-padded to ``L``'s channels along ``dim``, the first ``out`` kept."""
    extra = L.shape[0] - x.shape[dim]
    if extra > 0:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, extra])
    z = term = x
    for i in range(1, terms + 1):
        term = op(term, L) / i
        z = z + term
    return z.narrow(dim, 0, out)


class SOCLinear(_SOC):
    """Dense SOC: ``exp(L)`` with ``L`` a skew-symmetric ``max(in, out)`` square matrix.

    Args:
        in_features, out_features: sizes (``out_features`` defaults to ``in_features``).
        bias: learn an additive bias.
        train_terms, eval_terms: terms of the series in training and in eval mode.
        correction: the norm ``‖L‖`` is held at (the power method's estimate of ``‖S‖`` scaled to it).
        init_iters: power iterations at construction.

    Shape: ``(*, in_features) → (*, out_features)``.
    """

    operator_kind = "matrix"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        bias: bool = True,
        train_terms: int = 5,
        eval_terms: int = 12,
        correction: float = 0.7,
        init_iters: int = 50,
    ) -> None:
        super().__init__()
        in_features, out_features = self._dense(in_features, out_features)
        c = max(in_features, out_features)
        self.weight = nn.Parameter(torch.randn(c, c) / math.sqrt(c))
        self.register_buffer("u", F.normalize(torch.randn(c), dim=0))
        self._setup(c, train_terms, eval_terms, correction, init_iters, bias)

    def skew(self) -> torch.Tensor:
        return 0.5 * (self.weight - self.weight.t())

    def _op(self, x, skew):
        return x @ skew.t()

    @staticmethod
    def _is_skew(skew):
        return bool(torch.equal(skew.t(), -skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        z = self._series(x, dim=x.dim() - 1)
        return z if self.bias is None else z + self.bias

    def plain(self) -> nn.Module:
        return PlainSOC(self.eval_operator(), self.bias, self.eval_terms, self.out_features, None)


class SOCConv2d(_SOC):
    """Convolutional SOC: ``exp(L)`` with ``L`` a ``k×k`` skew-symmetric stride-1 'same' convolution on
    ``max(in, out)`` channels.

    Args:
        in_shape: ``(C, H, W)`` of the inputs (the bound is certified on that shape).
        out_channels: defaults to ``C``.
        kernel_size: odd.
        bias: learn an additive bias.
        padding_mode: ``"zeros"`` (the comparison's) or ``"circular"``.
        train_terms, eval_terms, correction, init_iters: as :class:`SOCLinear`.

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    operator_kind = "kernel"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "zeros",
        train_terms: int = 5,
        eval_terms: int = 12,
        correction: float = 0.7,
        init_iters: int = 50,
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        c = max(in_shape[0], out_channels)
        self.work_shape = (c, *in_shape[1:])
        self.weight = nn.Parameter(torch.randn(c, c, kernel_size, kernel_size) / math.sqrt(c))
        u = torch.randn(1, *self.work_shape)
        self.register_buffer("u", u / u.norm())
        self._setup(c, train_terms, eval_terms, correction, init_iters, bias)

    @property
    def operator_shape(self) -> tuple[int, ...]:
        return self.work_shape

    def skew(self) -> torch.Tensor:
        return 0.5 * (self.weight - flip_transpose(self.weight))

    def _op(self, x, skew):
        return conv_same(x, skew, None, self.padding_mode)

    @staticmethod
    def _is_skew(skew):
        return bool(torch.equal(flip_transpose(skew), -skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        z = self._series(x, dim=1)
        return z if self.bias is None else z + self.bias[:, None, None]

    def plain(self) -> nn.Module:
        return PlainSOC(self.eval_operator(), self.bias, self.eval_terms, self.out_shape[0], self.padding_mode)


class PlainSOC(nn.Module):
    """``Σ_{k≤K} Lᵏx/k! + b`` with a fixed generator ``L`` (dense when ``padding_mode`` is None)."""

    def __init__(self, L, bias, terms: int, out: int, padding_mode: str | None) -> None:
        super().__init__()
        self.register_buffer("L", detached(L))
        self.register_buffer("bias", detached(bias))
        self.terms, self.out, self.padding_mode = int(terms), int(out), padding_mode

    def _op(self, x: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        return x @ L.t() if self.padding_mode is None else conv_same(x, L, None, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.padding_mode is None
        z = exp_series(x, self.L, self.terms, self._op, x.dim() - 1 if dense else 1, self.out)
        if self.bias is None:
            return z
        return z + (self.bias if dense else self.bias[:, None, None])
