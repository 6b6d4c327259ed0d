r"""SOC — Skew Orthogonal Convolutions (Singla & Feizi, ICML 2021):

.. math::  x \mapsto \exp(L)\,x + b \approx \sum_{k=0}^{K} \frac{L^k x}{k!}, \qquad L = -L^\top

``L = c·S/σ̂``: ``S = (M − Mᵀ)/2`` is skew-symmetric — for a convolution, ``Mᵀ`` is the kernel with channels
swapped and taps reflected, so the stride-1 'same' convolution with kernel ``S`` is a skew-symmetric operator
on the finite grid (zero or circular padding alike).  ``σ̂`` and ``c`` are the reference code's:

* convolution: ``σ̂ = min(σ₁, σ₂, σ₃, σ₄)``, the power-method estimates of the spectral norms of four matrix
  reshapings of the kernel ``S`` — ``(out·h)×(in·w)``, ``(out·w)×(in·h)``, ``out×(in·h·w)``, ``in×(out·h·w)`` — each
  ``vᵀ S u`` with persistent unit vectors (Singla & Feizi's bound, without its ``√(hw)`` factor, which the
  ``correction`` ``c`` replaces: 0.7, 1.0 for a 1×1 kernel).  So ``‖L‖`` is not held at ``c``: it is what this
  normalisation makes it (≈ 1.2-1.35 on the comparison's nets), and the certificate below covers any value;
* dense: ``σ̂`` a power-method estimate of ``‖S‖``, ``c = 0.7``.

The vectors take 50 power iterations at construction and, in training, 50 more every 200th forward and 1 at the
others; none in eval mode (frozen).  ``exp(L)`` is orthogonal; the series is truncated after ``train_terms``
terms in training and ``eval_terms`` in eval mode (5 and 12).  More channels out than in: the input is
zero-padded (an isometry); fewer: the output is truncated (norm ≤ 1).  Bias ``U(±1/√out)``.

**Certified bound, truncation included.**  With ``ℓ`` a certified upper bound of ``‖L‖`` (the matrix, or the
Fourier symbol on the actual input shape) and ``K = eval_terms``,

.. math::  \Big\|\sum_{k\le K} \frac{L^k}{k!}\Big\| \le \|\exp(L)\| + \Big\|\sum_{k>K}\frac{L^k}{k!}\Big\|
           \le 1 + \sum_{k>K} \frac{\ell^k}{k!},

the tail summed term by term until the ratio of consecutive terms ``ℓ/(k+1)`` is below 1/10, then closed by
the geometric bound.  ``‖exp(L)‖ = 1`` needs ``L`` exactly skew-symmetric; the bound checks this on the
applied tensor (``fl(a − b) = −fl(b − a)``, so it holds in floating point) and otherwise reports the plain
``Σ_{k≤K} ℓ^k/k!``.  With ``ℓ = 1.35`` and ``K = 12`` the tail is ~1e-8.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..norms import CERT_SLACK
from .base import LipschitzLayer, channels_last_on_cpu, conv_same, detached, flip_transpose


def exp_series_tail(ell: float, K: int) -> float:
    """Upper bound of ``Σ_{k>K} ℓ^k/k!`` (float64, enlarged for rounding)."""
    if ell <= 0:
        return 0.0
    if ell > 20:  # far outside the method's regime (the series' terms peak near k = ℓ): the whole series bounds it
        return math.exp(ell) * (1 + 1e-12) if ell < 700 else math.inf
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


#: the four matrix reshapings of a ``(C_out, C_in, h, w)`` kernel ``S`` (axes ``o, i, a, b``; Singla & Feizi's
#: bound): the axes of ``u`` (its columns) and of ``v`` (its rows), so that ``σ_m = vᵀ S_m u``
FOUR_RESHAPINGS = [("ib", "oa"), ("ia", "ob"), ("iab", "o"), ("oab", "i")]  # (out·h)×(in·w), (out·w)×(in·h), ...


class _SOC(LipschitzLayer):
    repr_fields = ("train_terms", "eval_terms", "correction")
    #: every this many training forwards the estimate takes ``init_iters`` power iterations (the reference's 200)
    refresh_every = 200

    def _setup(
        self, channels: int, train_terms: int, eval_terms: int, correction: float, init_iters: int, bias: bool
    ) -> None:
        for name, v in (("train_terms", train_terms), ("eval_terms", eval_terms)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not correction > 0:
            raise ValueError(f"correction must be > 0, got {correction}")
        self.train_terms, self.eval_terms, self.correction = train_terms, eval_terms, float(correction)
        self.channels, self.init_iters = channels, init_iters
        out = self.out_shape[0]
        self.bias = nn.Parameter(torch.empty(out).uniform_(-1 / math.sqrt(out), 1 / math.sqrt(out))) if bias else None
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))  # training forwards so far
        with torch.no_grad():
            self._power_steps(init_iters)

    # -- the skew-symmetric operator -----------------------------------------------------------------
    def skew(self) -> torch.Tensor:
        raise NotImplementedError

    def _op(self, x: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _power_steps(self, iters: int) -> None:
        raise NotImplementedError

    def _sigma(self, skew: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _is_skew(skew: torch.Tensor) -> bool:
        raise NotImplementedError

    def operator(self) -> torch.Tensor:
        """``L = c·S/σ̂``, the skew-symmetric generator the forward pass exponentiates (power iterations first, in
        training)."""
        if self.training:
            with torch.no_grad():
                self._power_steps(self.init_iters if int(self.forwards) % self.refresh_every == 0 else 1)
                self.forwards += 1
        s = self.skew()
        return s * (self.correction / self._sigma(s).clamp_min(1e-12))

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

    def _power_steps(self, iters: int) -> None:
        s = self.skew().detach()
        for _ in range(iters):
            w = -self._op(self._op(self.u, s), s)  # SᵀS u = −S² u
            self.u.copy_(w / w.norm().clamp_min(1e-30))

    def _sigma(self, skew: torch.Tensor) -> torch.Tensor:
        return self._op(self.u, skew).norm()

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
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        padding_mode: ``"zeros"`` (the comparison's) or ``"circular"``.
        train_terms, eval_terms, init_iters: as :class:`SOCLinear`.
        correction: ``c`` (default: the reference's, 0.7; 1.0 for a 1×1 kernel).

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
        correction: float | None = None,
        init_iters: int = 50,
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        c, k = max(in_shape[0], out_channels), kernel_size
        self.work_shape = (c, *in_shape[1:])
        self.weight = nn.Parameter(torch.randn(c, c, k, k) / math.sqrt(c))
        size = {"o": c, "i": c, "a": k, "b": k}
        for m, axes in enumerate(FOUR_RESHAPINGS):  # the reshapings' unit vectors (u: columns, v: rows)
            for name, ax in zip("uv", axes):
                vec = torch.randn(*[size[x] for x in ax])
                self.register_buffer(f"{name}{m}", vec / vec.norm())
        correction = (1.0 if k == 1 else 0.7) if correction is None else correction
        self._setup(c, train_terms, eval_terms, correction, init_iters, bias)

    @property
    def operator_shape(self) -> tuple[int, ...]:
        return self.work_shape

    def skew(self) -> torch.Tensor:
        return 0.5 * (self.weight - flip_transpose(self.weight))

    def _power_steps(self, iters: int) -> None:
        s = self.skew().detach()
        for _ in range(iters):
            for m, (ua, va) in enumerate(FOUR_RESHAPINGS):
                u, v = getattr(self, f"u{m}"), getattr(self, f"v{m}")
                w = torch.einsum(f"oiab,{ua}->{va}", s, u)
                v.copy_(w / w.norm().clamp_min(1e-30))
                w = torch.einsum(f"oiab,{va}->{ua}", s, v)
                u.copy_(w / w.norm().clamp_min(1e-30))

    def _sigma(self, skew: torch.Tensor) -> torch.Tensor:
        """``min_m vₘᵀ Sₘ uₘ`` over the four reshapings (with its gradient through ``S``)."""
        return torch.stack(
            [
                torch.einsum(f"oiab,{ua},{va}->", skew, getattr(self, f"u{m}"), getattr(self, f"v{m}"))
                for m, (ua, va) in enumerate(FOUR_RESHAPINGS)
            ]
        ).min()

    def _op(self, x, skew):
        return conv_same(x, skew, None, self.padding_mode)

    @staticmethod
    def _is_skew(skew):
        return bool(torch.equal(flip_transpose(skew), -skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
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
        x = x if dense else channels_last_on_cpu(x)  # the constrained layer's layout: the same sums, bit for bit
        z = exp_series(x, self.L, self.terms, self._op, x.dim() - 1 if dense else 1, self.out)
        if self.bias is None:
            return z
        return z + (self.bias if dense else self.bias[:, None, None])
