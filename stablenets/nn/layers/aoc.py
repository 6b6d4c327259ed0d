r"""AOC — Adaptive Orthogonal Convolutions (Boissin, Mamalet, Fel, Picard, Massena, Serrurier, 2025), through
their package ``orthogonium`` (``AdaptiveOrthoConv2d``).

For a stride-1 ``k×k`` convolution AOC is a scalable BCOP: ``2k`` parameter matrices are normalised by a
power-method estimate (3 iterations per forward) and orthogonalised by 12 Björck iterations; two of them make a
``1×1`` orthogonal map from two block reflectors ``(I − 2P₀)(I − 2P₁)``, the others the ``2×2`` projector blocks of
Xiao et al., composed by block convolution into an explicit ``k×k`` kernel (a ``1×1`` layer: an orthogonal matrix).
The convolution is an ordinary one with circular padding (orthogonal on the torus) or zero padding (norm ≤ 1).

This class holds the ``orthogonium`` layer and applies its kernel itself, so that the map is exactly the one its
certificate describes; in eval mode the package's power iterations are paused (the stored vectors are used as they
are), so that the eval-mode kernel depends on nothing but the stored tensors.
Operator and certified bound: the kernel, its norm from its Fourier symbol on the actual
input shape (:mod:`stablenets.nn.norms`; ``orthogonium``'s own Gram-iteration bound is not used).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .base import LipschitzLayer, PlainConv, conv_same


def _power_forward(module: nn.Module, *args, **kwargs):
    """The package's power iteration, 3 iterations per access in training and none in eval mode (the eval-mode
    kernel is then a pure function of the parameters and the stored vectors, as certified).  The mode is read from
    the module's own flag at each call: Lightning restores ``training`` flags after validation by assignment, without
    ``train()``, so a mode set in ``train()`` would leave the iterations off while the net trains (the normalisation
    then goes stale and Björck's iteration diverges)."""
    kwargs["n_iters"] = 3 if module.training else 0
    return type(module).forward(module, *args, **kwargs)


class AOCConv2d(LipschitzLayer):
    """Adaptive orthogonal convolution (``orthogonium.layers.conv.AOC.AdaptiveOrthoConv2d``).

    Args:
        in_shape, out_channels, kernel_size, bias: as for every convolutional family (:class:`.base.LipschitzLayer`).
        padding_mode: ``"circular"`` (the package's default: orthogonal) or ``"zeros"``.

    Shape: ``(B, C, H, W) → (B, out_channels, H, W)``.
    """

    operator_kind = "kernel"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int | None = None,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "circular",
    ) -> None:
        super().__init__()
        in_shape, out_channels = self._conv(in_shape, out_channels, kernel_size, padding_mode)
        try:
            from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d
        except ImportError as e:  # a dependency of the package; say so rather than fail deep inside
            raise ImportError("the AOC family needs the 'orthogonium' package (pip install orthogonium)") from e
        self.conv = AdaptiveOrthoConv2d(
            in_shape[0], out_channels, kernel_size, stride=1, padding="same", bias=bias, padding_mode=padding_mode
        )
        self.bias = self.conv.bias
        for m in self.conv.modules():
            if "PowerIteration" in type(m).__name__:
                m.forward = functools.partial(_power_forward, m)
            if type(m).__name__ == "L2Normalize":
                m.dtype = None  # the package fixes the dtype at construction: follow the layer's instead

    def operator(self) -> torch.Tensor:
        """The orthogonal kernel the package builds (recomputed from its parameters at each access)."""
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        return conv_same(x, self.operator(), self.bias, self.padding_mode)

    def plain(self) -> nn.Module:
        return PlainConv(self.eval_operator(), self.bias, self.padding_mode)
