r"""Certified Lipschitz bounds (L2 → L2) of composed networks, part by part, in eval mode.

:func:`lipschitz_bound` multiplies the bounds of the parts of an ``nn.Sequential`` (or of any module) on
its actual input shape, which it follows through the parts.  Each rule is exact or a certified upper
bound; a module it has no rule for raises :class:`UnknownLayerError` naming it — never a guess:

* a module with its own ``lipschitz_bound()`` (gradient-flow blocks, spectral layers, models): that value;
* ``nn.Linear``: ``‖W‖₂`` (:mod:`~stablenets.nn.norms`); ``nn.Conv2d`` (zero padding, no groups or dilation): the
  Fourier-symbol
  bound of the operator on the actual input shape;
* average pooling (``AvgPool2d`` with any kernel, stride, padding, ``ceil_mode``, ``count_include_pad``,
  ``divisor_override``; ``AdaptiveAvgPool2d``): a linear map with non-negative entries, so
  ``‖A‖² = ρ(AᵀA)`` is bounded above by the Collatz–Wielandt ratio ``max_i (AᵀAv)_i / v_i`` for any
  positive ``v`` — and equals it for the Perron vector, which the power method approaches: exact in the
  limit, an upper bound at every iterate;
* ``MaxPool2d``, ``AdaptiveMaxPool2d``: ``√(max number of windows covering one input)`` — each output moves by at
  most the largest
  change in its window, and a change at a pixel that is the maximum of every window covering it attains it;
* reshapes and permutations (``Identity``, ``Flatten``, ``Unflatten``, ``PixelShuffle``, ``PixelUnshuffle``),
  dropout (the identity in eval mode): 1;
* activations: ReLU, ReLU6, Hardtanh, Tanh, Softplus: 1; Sigmoid: 1/4; LeakyReLU, ELU: ``max(1, slope)``;
* batch normalisation in eval mode: ``max |γ| / √(running var + eps)``.

Bounds are float64 Python floats, enlarged by ``CERT_SLACK`` where float64 arithmetic could round down.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..contracts import LipschitzBounded
from .norms import CERT_SLACK, conv_norm_bound, dense_norm_bound

ONE = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Tanh,
    nn.Softplus,
)


class UnknownLayerError(ValueError):
    """No certified Lipschitz rule is known for a module."""


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the duration (bounds describe the eval-mode map), then restored."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


def lipschitz_bound(module: nn.Module | list[nn.Module], in_shape: tuple[int, ...], name: str = "") -> float:
    """Certified Lipschitz bound of ``module`` (eval mode; a list: their composition, first applied first) on
    inputs of shape ``in_shape`` (no batch axis)."""
    if isinstance(module, (list, tuple)):
        module = nn.Sequential(*module)
    with eval_mode(module):
        bound, _ = _bound(module, tuple(int(s) for s in in_shape), name or type(module).__name__)
    return bound


def _bound(module: nn.Module, shape: tuple[int, ...], name: str) -> tuple[float, tuple[int, ...]]:
    if isinstance(module, nn.Sequential):
        total = 1.0
        for child_name, child in module.named_children():
            b, shape = _bound(child, shape, f"{name}.{child_name}")
            total *= b
        return total, shape
    return _part_bound(module, shape, name), _out_shape(module, shape)


@torch.no_grad()
def _out_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    param = next(module.parameters(), None)
    probe = torch.zeros(
        1,
        *shape,
        dtype=param.dtype if param is not None else torch.float32,
        device=param.device if param is not None else "cpu",
    )
    return tuple(module(probe).shape[1:])


def _part_bound(module: nn.Module, shape: tuple[int, ...], name: str) -> float:
    if isinstance(module, LipschitzBounded):
        return float(module.lipschitz_bound())
    if isinstance(module, ONE):
        return 1.0
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.ELU):
        return max(1.0, module.alpha)
    if isinstance(module, nn.Linear):
        return float(dense_norm_bound(module.weight))
    if isinstance(module, nn.Conv2d):
        if (
            module.groups != 1
            or module.dilation != (1, 1)
            or module.padding_mode != "zeros"
            or isinstance(module.padding, str)
        ):
            raise UnknownLayerError(
                f"{name}: no Lipschitz rule for {module} (only zero-padded convolutions with "
                "numeric padding, groups=1, dilation=1)"
            )
        return float(conv_norm_bound(module.weight, shape, module.stride, module.padding))
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return nonnegative_operator_norm(module, shape)
    if isinstance(module, nn.MaxPool2d):
        return maxpool_bound(module, shape, name)
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return adaptive_maxpool_bound(module, shape)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_var is not None:
        gamma = (
            module.weight.detach().double()
            if module.weight is not None
            else torch.ones_like(module.running_var).double()
        )
        return float((gamma.abs() / (module.running_var.double() + module.eps).sqrt()).max()) * (1 + CERT_SLACK)
    raise UnknownLayerError(
        f"{name}: no certified Lipschitz rule for {type(module).__name__} ({module}); give it a "
        "lipschitz_bound() method or use a layer with a known rule"
    )


def _channel_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 3:
        raise UnknownLayerError(f"pooling needs image inputs (C, H, W), got shape {shape}")
    return (1, 1, shape[1], shape[2])  # pooling acts on each channel alike


_POOL_NORMS: dict[tuple, float] = {}


def nonnegative_operator_norm(op: nn.Module, shape: tuple[int, ...], iters: int = 200) -> float:
    """Upper bound of ``‖A‖₂`` for a linear ``A`` with non-negative entries (per channel): Collatz–Wielandt.

    Cached by the module's type, settings and the input shape (it depends on nothing else)."""
    key = (type(op), tuple(sorted((k, str(v)) for k, v in vars(op).items() if not k.startswith("_"))), shape[1:])
    if key not in _POOL_NORMS:
        _POOL_NORMS[key] = _collatz_wielandt(op, shape, iters)
    return _POOL_NORMS[key]


@torch.no_grad()
def _collatz_wielandt(op: nn.Module, shape: tuple[int, ...], iters: int) -> float:
    x = torch.ones(_channel_shape(shape), dtype=torch.float64)

    def ata(v: torch.Tensor) -> torch.Tensor:  # AᵀAv = ∇_v ½‖Av‖²
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            out = op(v)
            (g,) = torch.autograd.grad(out, v, grad_outputs=out)
        return g

    covered = ata(x) > 0  # inputs no window reads are decoupled: AᵀA is zero on their rows and columns
    if not covered.any():
        return 0.0
    v = x
    for _ in range(iters):
        w = ata(v)
        v = w / w.max()
    ratio = (ata(v)[covered] / v[covered]).max()
    return math.sqrt(float(ratio)) * (1 + CERT_SLACK)


def maxpool_bound(pool: nn.MaxPool2d, shape: tuple[int, ...], name: str = "MaxPool2d") -> float:
    """``√(max number of pooling windows covering one input pixel)`` on the actual input shape."""
    if pool.dilation not in (1, (1, 1)):
        raise UnknownLayerError(f"{name}: no Lipschitz rule for a dilated max pooling ({pool})")
    x = torch.zeros(_channel_shape(shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():  # window membership counts: the adjoint of a sum pooling applied to ones
        windows = F.avg_pool2d(
            x, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, count_include_pad=True, divisor_override=1
        )
        (counts,) = torch.autograd.grad(windows.sum(), x)
    expected = F.max_pool2d(x.detach(), pool.kernel_size, pool.stride, pool.padding, 1, pool.ceil_mode).shape
    if windows.shape != expected:  # the two poolings must agree on the windows
        raise UnknownLayerError(f"{name}: cannot enumerate the windows of {pool} on {shape}")
    return math.sqrt(float(counts.max()))


def _adaptive_cover(n: int, out: int | None) -> int:
    """Most adaptive-pooling windows along one axis of length ``n`` (``out`` windows) covering one index."""
    out = n if out is None else out
    counts = [0] * n
    for i in range(out):  # PyTorch's windows: [floor(i n / out), ceil((i + 1) n / out))
        for j in range((i * n) // out, -((-(i + 1) * n) // out)):
            counts[j] += 1
    return max(counts)


def adaptive_maxpool_bound(pool: nn.AdaptiveMaxPool2d, shape: tuple[int, ...]) -> float:
    """``√(max number of windows covering one input pixel)`` of an adaptive max pooling (1 for a global one)."""
    h, w = _channel_shape(shape)[2:]
    size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size, pool.output_size)
    return math.sqrt(_adaptive_cover(h, size[0]) * _adaptive_cover(w, size[1]))
