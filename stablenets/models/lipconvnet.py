r"""The benchmark ConvNet of "1-Lipschitz Layers Compared" (Prach, Brau, Buttazzo & Lampert, CVPR 2024), any
layer family of :mod:`stablenets.nn.layers` plugged in.

A plain stack, every part 1-Lipschitz, the convolutions all of one family (``model/layer=<family>``):

* optional input centring (:class:`~stablenets.nn.isometries.Translate`) and zero padding of the borders up
  to a multiple of ``2^blocks`` (:class:`~stablenets.nn.isometries.SpatialPad`; Fashion-MNIST 28×28 → 32×32):
  isometries;
* zero channels appended up to the base width ``w`` (:class:`~stablenets.nn.isometries.ChannelPad`), a 1×1
  convolution of the family and MaxMin;
* ``blocks`` down-sizing blocks; block ``i`` works at ``w·2^i`` channels: ``layers`` × (a ``kernel_size``
  convolution of the family + MaxMin), then the first half of the channels is kept
  (:class:`~stablenets.nn.isometries.FirstChannels`) and ``PixelUnshuffle(2)`` halves the resolution and
  quadruples the channels (``w·2^i → w·2^(i+1)``).  A block at 2×2 (the fifth on 32×32) takes 1×1 kernels;
* ``AdaptiveMaxPool2d(1)``, a 1×1 convolution of the family at ``w·2^blocks`` channels as the head, and the
  first ``out_dim`` of its outputs as logits.

Sizes by base width: XS 16, S 32, M 64, L 128 (five blocks of five layers, kernel 3 — the comparison's
``ConvNetXS`` … ``ConvNetL``).  :meth:`lipschitz_bound` composes the parts' certified bounds with
:func:`stablenets.nn.bounds.lipschitz_bound`; the head is not linear for the residual families, so the
certificate is the plain ``m(x)/(√2 L)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from ..checks import check_count
from ..nn.activations import GroupSort
from ..nn.bounds import lipschitz_bound
from ..nn.isometries import ChannelPad, FirstChannels, SpatialPad, Translate

SIZES = {"XS": 16, "S": 32, "M": 64, "L": 128}


class LipConvNet(nn.Module):
    """The comparison's ConvNet with every convolution of one layer family (see the module docstring).

    Args:
        in_shape: ``(C, H, W)`` of the inputs.
        out_dim: classes (the first ``out_dim`` outputs of the head are the logits).
        layer: the family's constructor, ``layer(in_shape, out_channels=None, kernel_size=...)``
            (``conf/model/layer/<family>.yaml``, a partial).
        size: ``XS | S | M | L`` (base width 16, 32, 64, 128), unless ``base_width`` is given.
        base_width: the width of the first block (even).
        blocks: down-sizing blocks; the input is zero-padded to a multiple of ``2^blocks``.
        layers: layer + MaxMin pairs per block.
        kernel_size: of the blocks' layers (1 at 2×2 images).
        center: per-channel offsets subtracted from the input (an isometry), e.g. the data's mean.
        ends: extra arguments of the first 1×1 layer and the head (e.g. AOL's orthogonal init).

    Shape: ``(B, *in_shape) → (B, out_dim)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        layer: Callable[..., nn.Module],
        size: str = "XS",
        base_width: int | None = None,
        blocks: int = 5,
        layers: int = 5,
        kernel_size: int = 3,
        center: list[float] | None = None,
        ends: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"LipConvNet needs image inputs (C, H, W), got shape {tuple(in_shape)}")
        if not callable(layer):
            raise ValueError("LipConvNet needs a convolutional layer family (model/layer=<family>)")
        conv = layer
        end = partial(layer, **dict(ends or {}))
        if base_width is None:
            if size not in SIZES:
                raise ValueError(f"size must be one of {list(SIZES)} (or set base_width), got {size!r}")
            base_width = SIZES[size]
        check_count(base_width=base_width, blocks=blocks, layers=layers, kernel_size=kernel_size)
        if base_width % 2:
            raise ValueError(f"base_width must be even (MaxMin pairs channels, blocks keep half), got {base_width}")
        c_in = int(in_shape[0])
        if c_in > base_width:
            raise ValueError(f"the input's {c_in} channels exceed base_width {base_width}")
        width_out = base_width * 2**blocks
        if out_dim > width_out:
            raise ValueError(f"out_dim {out_dim} exceeds the head's {width_out} channels")
        if center is not None and len(center) != c_in:
            raise ValueError(f"center needs one value per input channel ({c_in}), got {list(center)}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.base_width = base_width

        parts: dict[str, nn.Module] = {}
        if center is not None:
            parts["center"] = Translate(center)
        pad = SpatialPad.to_multiple(self.in_shape, 2**blocks)
        shape = pad.out_shape(self.in_shape)
        if shape != self.in_shape:
            parts["pad"] = pad
        parts["zero_channels"] = ChannelPad(c_in, base_width)
        shape = (base_width, *shape[1:])
        parts["first_conv"] = end(shape, kernel_size=1)
        parts["first_activation"] = GroupSort(2)
        for i in range(blocks):
            k = kernel_size if min(shape[1:]) > 2 else 1  # a 2x2 image takes 1x1 kernels (the reference's rule)
            block: list[nn.Module] = []
            for _ in range(layers):
                block += [conv(shape, kernel_size=k), GroupSort(2)]
            c, h, w = shape
            block += [FirstChannels(c // 2), nn.PixelUnshuffle(2)]
            shape = (2 * c, h // 2, w // 2)
            parts[f"block{i + 1}"] = nn.Sequential(*block)
        parts["pool"] = nn.AdaptiveMaxPool2d(1)
        shape = (shape[0], 1, 1)
        parts["head"] = end(shape, kernel_size=1)
        parts["flatten"] = nn.Flatten()
        parts["logits"] = FirstChannels(out_dim)
        self.net = nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def lipschitz_bound(self) -> float:
        """Product of the parts' certified bounds on the actual input shape (eval mode)."""
        return lipschitz_bound(self.net, self.in_shape, "LipConvNet")
