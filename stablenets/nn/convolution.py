"""Stride-1 'same' convolutions with zero or circular padding, their exact adjoints, and the plain (export) forms
of fixed linear layers: what the spectral layers, the gradient-flow blocks and the layer families share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "circular")


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout convolutions run fastest in: channels-last for images on the CPU (oneDNN's
    NHWC kernels, faster than NCHW for the convolutions of these nets, backward included: docs/design-notes.md),
    unchanged otherwise (on CUDA the layout is left to the user).  Values are the same; only strides change."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def circular_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """``F.pad(x, (p, p, p, p), mode='circular')``: the same values, in the layout of ``x``.  A traced or exported
    graph gets concatenations of slices (operations every exporter knows); eager code gets :class:`_CircularPad`,
    whose backward folds the border's gradient back with one copy and eight strip additions instead of autograd's
    zero-filled slice gradients (the padding cost a small circular layer more than its convolution on the CPU:
    docs/design-notes.md)."""
    if not p:
        return x
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return _circular_pad_cat(x, p)
    return _CircularPad.apply(x, p)


def _circular_pad_cat(x: torch.Tensor, p: int) -> torch.Tensor:
    x = torch.cat([x[..., -p:, :], x, x[..., :p, :]], dim=-2)
    return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)


class _CircularPad(torch.autograd.Function):
    """Circular padding by ``p ≤ min(H, W)`` on the last two dimensions; its backward (differentiable itself)
    and its forward-mode derivative are the adjoint and the padding of the tangent."""

    @staticmethod
    def forward(x: torch.Tensor, p: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        if p > h or p > w:
            raise ValueError(f"circular padding {p} exceeds the image size {h}x{w}")
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(*x.shape[:-2], h + 2 * p, w + 2 * p, dtype=x.dtype, device=x.device, memory_format=layout)
        out[..., p : h + p, p : w + p] = x
        out[..., :p, p : w + p] = x[..., h - p :, :]
        out[..., h + p :, p : w + p] = x[..., :p, :]
        out[..., :p] = out[..., w : w + p]  # the corners come with the columns
        out[..., w + p :] = out[..., p : 2 * p]
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.p = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        p = ctx.p
        h, w = grad.shape[-2] - 2 * p, grad.shape[-1] - 2 * p
        out = grad[..., p : h + p, p : w + p].clone()
        out[..., h - p :, :] += grad[..., :p, p : w + p]
        out[..., :p, :] += grad[..., h + p :, p : w + p]
        out[..., w - p :] += grad[..., p : h + p, :p]
        out[..., :p] += grad[..., p : h + p, w + p :]
        out[..., h - p :, w - p :] += grad[..., :p, :p]
        out[..., h - p :, :p] += grad[..., :p, w + p :]
        out[..., :p, w - p :] += grad[..., h + p :, :p]
        out[..., :p, :p] += grad[..., h + p :, w + p :]
        return out, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _p=None) -> torch.Tensor:
        return _CircularPad.forward(tangent, ctx.p)


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
    """:func:`conv_same` with a fixed kernel and bias, on the input in the layout the constrained layers use
    (:func:`channels_last_on_cpu`, so that the plain form computes the same sums in the same order: bit for bit),
    circular padding as slices and concatenations: operations every exporter knows."""

    def __init__(self, kernel: torch.Tensor, bias: torch.Tensor | None, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.register_buffer("kernel", detached(kernel))
        self.register_buffer("bias", detached(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_same(channels_last_on_cpu(x), self.kernel, self.bias, self.padding_mode)

    def extra_repr(self) -> str:
        c_out, c_in, k, _ = self.kernel.shape
        return f"{c_in}, {c_out}, kernel_size={k}, padding_mode={self.padding_mode}"


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
