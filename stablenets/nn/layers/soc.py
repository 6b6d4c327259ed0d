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

from ...checks import check_count
from ..power import CERT_SLACK, dense_norm_bound
from .base import (
    check_image_shape,
    check_input,
    check_kernel,
    conv_same,
    conv_same_norm,
    dense_features,
    flip_transpose,
)


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


class _SOC(nn.Module):
    u: torch.Tensor

    def _setup(
        self,
        channels: int,
        out_channels: int,
        in_channels: int,
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
        self.in_channels, self.out_channels, self.channels = in_channels, out_channels, channels
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        with torch.no_grad():
            for _ in range(init_iters):
                self._power_step()

    # -- the skew-symmetric operator -----------------------------------------------------------------
    def skew(self) -> torch.Tensor:
        raise NotImplementedError

    def _op(self, x: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _certified_norm(self, skew: torch.Tensor) -> float:
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
        """``L = c·S/σ``, the skew-symmetric map of the forward pass (a power step first, in training)."""
        if self.training:
            self._power_step()
        s = self.skew()
        sigma = self._op(self.u, s).norm().clamp_min(1e-12)
        return s * (self.correction / sigma)

    @property
    def terms(self) -> int:
        return self.train_terms if self.training else self.eval_terms

    def _series(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if self.out_channels > self.in_channels:
            pad = [0, 0] * (x.dim() - 1 - dim) + [0, self.out_channels - self.in_channels]
            x = F.pad(x, pad)
        L = self.operator()
        z = term = x
        for i in range(1, self.terms + 1):
            term = self._op(term, L) / i
            z = z + term
        return z.narrow(dim, 0, self.out_channels)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """``1 + Σ_{k>K} ℓ^k/k!`` (see the module docstring), ``K = eval_terms``, for the eval-mode operator."""
        was = self.training
        self.eval()
        try:
            L = self.operator()
        finally:
            self.train(was)
        ell = self._certified_norm(L)
        if self._is_skew(L):
            return (1.0 + exp_series_tail(ell, self.eval_terms)) * (1 + CERT_SLACK)
        return exp_series_sum(ell, self.eval_terms) * (1 + CERT_SLACK)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} -> {self.out_channels}, terms={self.train_terms}/{self.eval_terms}, "
            f"correction={self.correction}"
        )


class SOCLinear(_SOC):
    """Dense SOC: ``exp(L)`` with ``L`` a skew-symmetric ``max(in, out)`` square matrix."""

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
        in_features, out_features = dense_features(in_features, out_features)
        c = max(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(c, c) / math.sqrt(c))
        self.register_buffer("u", F.normalize(torch.randn(c), dim=0))
        self._setup(c, out_features, in_features, train_terms, eval_terms, correction, init_iters, bias)

    def skew(self) -> torch.Tensor:
        return 0.5 * (self.weight - self.weight.t())

    def _op(self, x, skew):
        return x @ skew.t()

    def _certified_norm(self, skew):
        return float(dense_norm_bound(skew))

    @staticmethod
    def _is_skew(skew):
        return bool(torch.equal(skew.t(), -skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._series(x, dim=x.dim() - 1)
        return z if self.bias is None else z + self.bias


class SOCConv2d(_SOC):
    """Convolutional SOC on inputs of shape ``in_shape``: a ``k×k`` skew-symmetric stride-1 'same' convolution
    on ``max(in, out)`` channels, zero or circular padding."""

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
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, padding_mode, in_shape)
        check_count(out_channels=out_channels)
        out_channels = out_channels or in_shape[0]
        c = max(in_shape[0], out_channels)
        self.in_shape, self.padding_mode = in_shape, padding_mode
        self.out_shape = (out_channels, *in_shape[1:])
        self.work_shape = (c, *in_shape[1:])
        self.weight = nn.Parameter(torch.randn(c, c, kernel_size, kernel_size) / math.sqrt(c))
        u = torch.randn(1, *self.work_shape)
        self.register_buffer("u", u / u.norm())
        self._setup(c, out_channels, in_shape[0], train_terms, eval_terms, correction, init_iters, bias)

    def skew(self) -> torch.Tensor:
        return 0.5 * (self.weight - flip_transpose(self.weight))

    def _op(self, x, skew):
        return conv_same(x, skew, None, self.padding_mode)

    def _certified_norm(self, skew):
        return float(conv_same_norm(skew, self.work_shape, self.padding_mode))

    @staticmethod
    def _is_skew(skew):
        return bool(torch.equal(flip_transpose(skew), -skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_shape, "SOCConv2d")
        z = self._series(x, dim=1)
        return z if self.bias is None else z + self.bias[:, None, None]
