r"""What the layer families share: :class:`LipschitzLayer` (one base for every family), the stride-1 'same'
convolutions with zero or circular padding and their exact adjoints.

Every family is a :class:`LipschitzLayer`:

* :meth:`~LipschitzLayer.operator` — **the one accessor for the map the forward pass applies**: the linear
  operator of the layer, in the mode it is in, as a tensor of the kind named by ``operator_kind``: a matrix
  ``(out, in)`` (``"matrix"``), a stride-1 'same' kernel ``(out, in, k, k)`` applied with ``padding_mode``
  on ``operator_shape`` (``"kernel"``), or a per-frequency map ``(H, W//2 + 1, out, in)`` on the layer's
  Fourier grid (``"symbol"``, :mod:`.fourier`).  Residual and two-sided families name the operator their
  bound is computed from (SLL: ``T^{-1/2}W``; Sandwich: ``[A B]``; SOC: the skew generator ``L``);
* :meth:`~LipschitzLayer.operator_norm` — its certified norm, always through :mod:`stablenets.nn.norms`;
* :meth:`~LipschitzLayer.lipschitz_bound` — a certified upper bound of the Lipschitz constant of the
  **eval-mode** map with the stored parameters, in exact arithmetic: ``bound_from_norm(operator_norm())`` with
  the operator computed in eval mode, whatever mode the layer is in;
* :meth:`~LipschitzLayer.plain` — a standard torch module computing the same eval-mode map from fixed tensors
  (deel-torchlip's ``vanilla_export``): no norm is read, no check is run, no complex number is used, so
  ``torch.export`` and ONNX take it; :func:`stablenets.nn.plain.freeze` swaps it in;
* the shared constructor checks (:meth:`~LipschitzLayer._dense`, :meth:`~LipschitzLayer._conv`), the input
  check (:meth:`~LipschitzLayer.check_input`: a convolution's bound is for the shape it was built for) and
  ``extra_repr``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...checks import check_count
from ..bounds import eval_mode
from ..convolution import (  # noqa: F401 (re-exported: the families' shared pieces)
    PADDING_MODES,
    PlainConv,
    channels_last_on_cpu,
    circular_pad,
    conv_same,
    conv_same_adjoint,
    detached,
    flip_transpose,
    plain_linear,
)
from ..norms import circular_conv_norm_bound, conv_norm_bound, dense_norm_bound, symbol_norm_bound

OPERATOR_KINDS = ("matrix", "kernel", "symbol")


def check_image_shape(in_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be (C, H, W) with positive entries, got {tuple(in_shape)}")
    return shape


def check_kernel(kernel_size: int, padding_mode: str = "zeros", in_shape: tuple[int, int, int] | None = None) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(
            f"kernel_size must be an odd integer >= 1 (a shape-preserving convolution), got {kernel_size!r}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode == "circular" and in_shape is not None and min(in_shape[1:]) < kernel_size:
        raise ValueError(f"circular padding needs H, W >= kernel_size ({kernel_size}), got in_shape {in_shape}")


def conv_same_norm(kernel: torch.Tensor, in_shape: tuple[int, int, int], padding_mode: str = "zeros") -> torch.Tensor:
    """Certified upper bound (float64) of the operator norm of :func:`conv_same` on ``in_shape``."""
    if padding_mode == "circular":
        return circular_conv_norm_bound(kernel, in_shape)
    return conv_norm_bound(kernel, in_shape, 1, kernel.shape[-1] // 2)


class LipschitzLayer(nn.Module):
    """The base of the layer families (see the module docstring).  A subclass sets ``operator_kind``, calls
    :meth:`_dense` or :meth:`_conv` in its constructor, and implements ``forward`` (beginning with
    :meth:`check_input`), :meth:`operator` and :meth:`plain`; it overrides :meth:`bound_from_norm` when its
    Lipschitz constant is not the norm of its operator.

    The convolutional families share their first arguments: ``in_shape``, ``(C, H, W)`` of the inputs (the
    shape the bound is certified on; other shapes are refused), ``out_channels`` (default ``C``), an odd
    ``kernel_size`` (a stride-1 'same' convolution), ``bias`` (learn an additive bias) and ``padding_mode``
    (``"zeros"`` or ``"circular"``); they map ``(B, C, H, W) → (B, out_channels, H, W)``."""

    operator_kind: str = "matrix"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    padding_mode: str = "zeros"
    #: names shown by ``repr`` next to the shapes
    repr_fields: tuple[str, ...] = ()

    # -- construction ----------------------------------------------------------------------------------
    def _dense(self, in_features: int, out_features: int | None, residual: bool = False) -> tuple[int, int]:
        """Check and record a dense layer's sizes; ``out_features`` defaults to ``in_features`` (a residual
        layer must keep it).  Returns ``(in, out)``."""
        check_count(in_features=in_features, out_features=out_features)
        out_features = out_features or in_features
        if residual and out_features != in_features:
            raise ValueError(
                f"{type(self).__name__} is residual: out_features must equal in_features ({in_features}), "
                f"got {out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.in_shape, self.out_shape = (in_features,), (out_features,)
        return in_features, out_features

    def _conv(
        self,
        in_shape,
        out_channels: int | None,
        kernel_size: int,
        padding_mode: str = "zeros",
        residual: bool = False,
    ) -> tuple[tuple[int, int, int], int]:
        """Check and record a stride-1 'same' convolution on ``in_shape``; ``out_channels`` defaults to the
        input's (a residual layer must keep it).  Returns ``(in_shape, out_channels)``."""
        in_shape = check_image_shape(in_shape)
        check_kernel(kernel_size, padding_mode, in_shape)
        check_count(out_channels=out_channels)
        out_channels = out_channels or in_shape[0]
        if residual and out_channels != in_shape[0]:
            raise ValueError(
                f"{type(self).__name__} is residual: out_channels must equal the input's ({in_shape[0]}), "
                f"got {out_channels}"
            )
        self.in_shape, self.out_shape = in_shape, (out_channels, *in_shape[1:])
        self.kernel_size, self.padding_mode = kernel_size, padding_mode
        return in_shape, out_channels

    # -- the map -----------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """A layer's bound holds for the shape it was built for: refuse any other (a batch of such inputs)."""
        got = tuple(x.shape[1:]) if len(self.in_shape) == 3 else tuple(x.shape[-1:])
        if got != tuple(self.in_shape):
            raise ValueError(
                f"{type(self).__name__} was built for inputs of shape {tuple(self.in_shape)} (its certified bound "
                f"is for that shape), got a batch of shape {tuple(x.shape)}"
            )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`check_input`, and an image batch of a spatial family in the layout convolutions run fastest in on
        the CPU (channels-last, where oneDNN's kernels are fastest; values unchanged)."""
        self.check_input(x)
        return channels_last_on_cpu(x) if self.operator_kind == "kernel" else x

    def operator(self) -> torch.Tensor:
        """The linear operator the forward pass applies, in the current mode (see the module docstring)."""
        raise NotImplementedError

    @property
    def operator_shape(self) -> tuple[int, ...]:
        """The input shape the operator acts on (a family that pads channels acts on more)."""
        return self.in_shape

    def operator_norm(self, op: torch.Tensor | None = None) -> float:
        """Certified norm (float64) of ``op`` (default: :meth:`operator`) as this layer applies it."""
        op = self.operator() if op is None else op
        if self.operator_kind == "kernel":
            return float(conv_same_norm(op, self.operator_shape, self.padding_mode))
        if self.operator_kind == "symbol":
            return float(symbol_norm_bound(op))
        return float(dense_norm_bound(op))

    def bound_from_norm(self, norm: float) -> float:
        """The Lipschitz constant of the layer given the certified norm of its operator (default: the norm)."""
        return norm

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified upper bound of the Lipschitz constant of the eval-mode map (computed in eval mode)."""
        with eval_mode(self):
            return self.bound_from_norm(self.operator_norm())

    @torch.no_grad()
    def eval_operator(self) -> torch.Tensor:
        """:meth:`operator` as the eval-mode forward pass applies it (computed in eval mode, no gradient)."""
        with eval_mode(self):
            return self.operator()

    def plain(self) -> nn.Module:
        """A standard torch module computing the eval-mode map from fixed tensors (see the module docstring)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        fields = [f"{self.in_shape} -> {self.out_shape}"]
        if self.operator_kind != "matrix":
            fields.append(f"kernel_size={getattr(self, 'kernel_size', None)}, padding_mode={self.padding_mode}")
        fields += [f"{name}={getattr(self, name)}" for name in self.repr_fields]
        return ", ".join(fields)
