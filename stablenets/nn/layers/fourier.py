r"""Convolutions applied frequency by frequency: the families that build their map in the Fourier domain
(Cayley, LOT, Sandwich, BRO).

On a grid of ``Hg × Wg`` pixels, a map given by its per-frequency matrices ``Q(ω)`` (``C_out × C_in``) acts as

.. math::  y = \mathcal{F}^{-1}\big(Q(\omega)\, \mathcal{F}x(\omega)\big), \qquad
           \mathcal{F} \text{ the unitary 2-D DFT}

computed on the **half spectrum** of real inputs (``rfft2`` / ``irfft2``, ``Wg//2 + 1`` frequencies per row): the
other half holds the conjugates, and ``Q(−ω) = \overline{Q(ω)}`` for every map built here from a real kernel by
operations that commute with conjugation.  Its operator norm is at most ``max_ω ‖Q(ω)‖₂`` over the half spectrum
(Parseval; at the self-conjugate frequencies ``irfft2`` keeps the real part, a contraction), which
:func:`stablenets.nn.norms.symbol_norm_bound` certifies.

The grid is the input's own (``padding_mode='circular'``: a circular convolution) or the input zero-padded by
``p = k//2`` on every side with the output cropped back (``padding_mode='zeros'``: exactly the zero-padded
'same' convolution, as LOT's and BRO's reference code computes it; cropping and zero-padding have norm ≤ 1).

:func:`kernel_symbol` is the symbol of the centred cross-correlation :func:`~.base.conv_same` —
``e^{−iω·p}·\overline{\hat K(ω)}`` — so a kernel means the same map in the Fourier families as in the spatial ones.

:class:`FourierMap` is the plain (export) form: the same map with the DFTs written as real matrix products — no
complex number, no FFT — so that ONNX takes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LipschitzLayer, PlainConv, channels_last_on_cpu, detached

__all__ = ["FourierLayer", "FourierMap", "kernel_symbol", "spectral_apply"]


def fourier_grid(in_shape: tuple[int, int, int], kernel_size: int, padding_mode: str) -> tuple[tuple[int, int], int]:
    """``((Hg, Wg), pad)``: the grid the map lives on and the zero padding of the input (0 when circular)."""
    p = kernel_size // 2 if padding_mode == "zeros" else 0
    return (in_shape[1] + 2 * p, in_shape[2] + 2 * p), p


def kernel_symbol(kernel: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(Hg, Wg//2 + 1, C_out, C_in)``: the symbol of the stride-1 'same' cross-correlation with a ``k×k`` kernel
    on the ``Hg×Wg`` torus, ``e^{−iω·p} \\overline{\\hat K(ω)}`` with ``p = k//2`` (the taps centred; the
    conjugate because a cross-correlation is a convolution with the reflected kernel)."""
    k = kernel.shape[-1]
    symbol = torch.fft.rfft2(kernel, s=grid).conj()  # (out, in, Hg, Wg//2 + 1)
    p = k // 2
    if p:
        a = torch.arange(grid[0], device=kernel.device, dtype=kernel.dtype)[:, None] / grid[0]
        b = torch.arange(grid[1] // 2 + 1, device=kernel.device, dtype=kernel.dtype)[None, :] / grid[1]
        symbol = symbol * torch.polar(torch.ones_like(a + b), -2 * math.pi * p * (a + b))
    return symbol.permute(2, 3, 0, 1)


def spectral_apply(x: torch.Tensor, q: torch.Tensor, grid: tuple[int, int], pad: int = 0) -> torch.Tensor:
    """``crop(irfft2(Q · rfft2(pad(x))))`` with unitary DFTs; ``x`` is ``(B, C_in, H, W)``, ``q`` is
    ``(Hg, Wg//2 + 1, C_out, C_in)`` complex."""
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    xf = torch.fft.rfft2(x, norm="ortho").permute(2, 3, 1, 0).contiguous()  # (Hg, Wr, C_in, B): one batched product
    y = torch.fft.irfft2((q @ xf).permute(3, 2, 0, 1), s=grid, norm="ortho")
    return y[..., pad : y.shape[-2] - pad, pad : y.shape[-1] - pad] if pad else y


class FourierLayer(LipschitzLayer):
    """A :class:`~.base.LipschitzLayer` whose operator is its per-frequency map (``operator_kind = 'symbol'``): a
    subclass calls :meth:`_fourier` after ``_conv`` and implements :meth:`symbol`; the forward applies it."""

    operator_kind = "symbol"
    grid: tuple[int, int]
    pad: int

    def _fourier(self) -> None:
        self.grid, self.pad = fourier_grid(self.in_shape, self.kernel_size, self.padding_mode)
        #: a 1×1 kernel's symbol is the same at every frequency: the map is computed at one and applied as a
        #: 1×1 convolution (the same function, without an FFT or a per-frequency solve)
        self.pointwise = self.kernel_size == 1
        self.n_frequencies = self.grid[0] * (self.grid[1] // 2 + 1)

    def symbol(self) -> torch.Tensor:
        """``Q``, ``(Hg, Wg//2 + 1, C_out, C_in)`` complex (``(1, 1, C_out, C_in)`` for a 1×1 kernel), in the
        current mode."""
        raise NotImplementedError

    def operator(self) -> torch.Tensor:
        return self.symbol()

    def kernel_symbol(self, kernel: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            w = kernel[:, :, 0, 0]
            return torch.complex(w, torch.zeros_like(w))[None, None]
        return kernel_symbol(kernel, self.grid)

    def spectrum_norm(self, symbol: torch.Tensor) -> torch.Tensor:
        """The Frobenius norm of the symbol over the whole half spectrum (a 1×1 kernel's: one frequency's, times
        the square root of their number)."""
        norm = symbol.norm()
        return norm * math.sqrt(self.n_frequencies) if self.pointwise else norm

    def apply_symbol(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            return F.conv2d(channels_last_on_cpu(x), q[0, 0].real[..., None, None])
        return spectral_apply(x, q, self.grid, self.pad)

    def plain_map(self, q: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
        if self.pointwise:
            return PlainConv(q[0, 0].real[..., None, None], bias)
        return FourierMap(q, self.grid, self.pad, bias)


def _dft(n: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, −sin)`` of ``2π jk/n`` (``n × n``), computed in float64 (exact up to one rounding per entry)."""
    j = torch.arange(n, dtype=torch.float64)
    angle = 2 * math.pi * torch.remainder(j[:, None] * j[None, :], n) / n
    return angle.cos().to(dtype=dtype, device=device), (-angle.sin()).to(dtype=dtype, device=device)


class FourierMap(nn.Module):
    """``crop(irfft2(Q · rfft2(pad(x)))) + b`` in real arithmetic: the plain form of a :class:`FourierLayer`.

    ``rfft2`` is a real DFT along the width (``Wg//2 + 1`` outputs) then a complex DFT along the height; the
    inverse is a complex DFT along the height, then the real inverse along the width, each half-spectrum term
    counted twice except the constant and Nyquist terms (whose imaginary parts drop out, as in ``irfft2``).
    Every DFT is a product with a fixed real matrix, scaled to be unitary."""

    def __init__(self, q: torch.Tensor, grid: tuple[int, int], pad: int = 0, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        q = q.detach()
        dtype, device = q.real.dtype, q.device
        hg, wg = grid
        self.grid, self.pad = (int(hg), int(wg)), int(pad)
        self.register_buffer("q_re", q.real.clone())
        self.register_buffer("q_im", q.imag.clone())
        self.register_buffer("bias", detached(bias))
        h_cos, h_sin = _dft(hg, dtype, device)
        w_cos, w_sin = _dft(wg, dtype, device)
        wr = wg // 2 + 1
        twice = torch.full((wr, 1), 2.0, dtype=dtype, device=device)
        twice[0] = 1.0
        if wg % 2 == 0:
            twice[-1] = 1.0
        scale = 1 / math.sqrt(hg * wg)
        self.register_buffer("w_cos", w_cos[:wr] * scale)  # (Wr, Wg): forward along the width, with the scale
        self.register_buffer("w_sin", w_sin[:wr] * scale)
        self.register_buffer("h_cos", h_cos)  # (Hg, Hg), symmetric
        self.register_buffer("h_sin", h_sin)
        self.register_buffer("iw_cos", w_cos[:wr] * twice * scale)  # inverse along the width, with the scale
        self.register_buffer("iw_sin", w_sin[:wr] * twice * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if p:
            x = F.pad(x, (p, p, p, p))
        xr, xi = x @ self.w_cos.T, x @ self.w_sin.T  # (B, C, Hg, Wr)
        zr = torch.einsum("ah,bchw->bcaw", self.h_cos, xr) - torch.einsum("ah,bchw->bcaw", self.h_sin, xi)
        zi = torch.einsum("ah,bchw->bcaw", self.h_cos, xi) + torch.einsum("ah,bchw->bcaw", self.h_sin, xr)
        yr = torch.einsum("awoi,biaw->boaw", self.q_re, zr) - torch.einsum("awoi,biaw->boaw", self.q_im, zi)
        yi = torch.einsum("awoi,biaw->boaw", self.q_re, zi) + torch.einsum("awoi,biaw->boaw", self.q_im, zr)
        ur = torch.einsum("ah,bcaw->bchw", self.h_cos, yr) + torch.einsum("ah,bcaw->bchw", self.h_sin, yi)
        ui = torch.einsum("ah,bcaw->bchw", self.h_cos, yi) - torch.einsum("ah,bcaw->bchw", self.h_sin, yr)
        y = ur @ self.iw_cos + ui @ self.iw_sin  # (B, C_out, Hg, Wg)
        if p:
            y = y[..., p : y.shape[-2] - p, p : y.shape[-1] - p]
        return y if self.bias is None else y + self.bias[:, None, None]
