"""Stride-1 'same' convolutions with zero or circular padding, their exact adjoints, and the plain (export) forms
of fixed linear layers: what the spectral layers, the gradient-flow blocks and the layer families share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "circular")


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout convolutions run fastest in: channels-last for images on the CPU (oneDNN's
    NHWC kernels: 1.6-3× faster than NCHW for the 8-16-channel convolutions of these nets, backward included),
    unchanged otherwise (on CUDA the layout is left to the user).  Values are the same; only strides change."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def circular_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """``F.pad(x, (p, p, p, p), mode='circular')`` as concatenations of slices: the same values, in operations
    every exporter knows."""
    if not p:
        return x
    x = torch.cat([x[..., -p:, :], x, x[..., :p, :]], dim=-2)
    return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)


def conv_same(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None, padding_mode: str = "zeros"
) -> torch.Tensor:
    """Stride-1 'same' cross-correlation with an odd ``k×k`` kernel, zero or circular padding."""
    p = kernel.shape[-1] // 2
    if padding_mode == "circular" and p:
        return F.conv2d(circular_pad(x, p), kernel, bias)
    return F.conv2d(x, kernel, bias, padding=p)


def flip_transpose(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint of :func:`conv_same` (channels swapped, taps reflected)."""
    return kernel.transpose(0, 1).flip(-2, -1)


def conv_same_adjoint(v: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """The exact adjoint of :func:`conv_same` (no bias): ``conv_same`` with the flipped, transposed kernel."""
    return conv_same(v, flip_transpose(kernel), None, padding_mode)


def detached(t: torch.Tensor | None) -> torch.Tensor | None:
    """A fixed copy for a plain module (no gradient, no tie to the layer's parameters)."""
    return None if t is None else t.detach().clone()


class PlainConv(nn.Module):
    """``conv_same`` with a fixed kernel and bias and circular padding (the padding as slices and
    concatenations, which every exporter knows)."""

    def __init__(self, kernel: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("kernel", detached(kernel))
        self.register_buffer("bias", detached(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_same(x, self.kernel, self.bias, "circular")


def plain_conv(kernel: torch.Tensor, bias: torch.Tensor | None, padding_mode: str = "zeros") -> nn.Module:
    """The standard layer of a stride-1 'same' convolution with a fixed kernel: ``nn.Conv2d`` (zero padding) or
    :class:`PlainConv` (circular padding)."""
    if padding_mode == "circular":
        return PlainConv(kernel, bias)
    k = kernel.shape[-1]
    conv = nn.Conv2d(
        kernel.shape[1],
        kernel.shape[0],
        k,
        padding=k // 2,
        bias=bias is not None,
        device=kernel.device,
        dtype=kernel.dtype,
    )
    return _fill(conv, kernel, bias)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """``nn.Linear`` holding a fixed weight and bias."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    return _fill(lin, weight, bias)


def _fill(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.requires_grad_(False)
