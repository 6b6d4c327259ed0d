r"""Layers of the paper as ``nn.Module``s.

* :class:`MLPLayer`           — ``σ(Az + b)`` (eq. 1) or ``Bᵀσ(Az + b)`` (Section 4)
* :class:`ResidualLayer`      — ``z + σ(Az + b)`` (eq. 2) or ``z + h Bᵀσ(Az + b)`` (Section 4)
* :class:`ResidualBlock`      — ``x + B σ(Ax + b)`` (snippet 2), dense
* :class:`ConvResidualBlock`  — the same with convolutions
* :class:`NonExpansiveBlock`  — ``x ↦ x − h Aᵀσ(Ax + b)`` (eq. 18, snippet 1), dense
* :class:`NonExpansiveConvBlock` — the same with ``A`` a convolution, ``Aᵀ`` its adjoint
* :class:`HamiltonianEulerBlock` — ``x + h J Aᵀσ(Ax + a)`` (eq. 26)
* :class:`SymplecticEulerBlock`  — the symplectic Euler step of eq. (28)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .constrained import ConvTracked, DenseTracked


def substeps_for(norm: torch.Tensor | float, T: float, k: float, margin: float = 0.0) -> int:
    """Smallest ``n ≥ 1`` with ``h = T/n ≤ 2/(k (1+margin) ‖A‖²)`` (eq. 19)."""
    lip = k * (1.0 + margin) * float(norm) ** 2  # Lipschitz constant of the vector field
    return max(1, math.ceil(T * lip / 2.0 - 1e-12))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


class MLPLayer(nn.Module):
    """``σ(Az + b)`` (eq. 1) when ``form='eq1'``, ``Bᵀσ(Az + b)`` (Section 4) when ``form='bt'``."""

    def __init__(self, dim: int, hidden: int, activation: str = "tanh", form: str = "bt") -> None:
        super().__init__()
        if form not in ("eq1", "bt"):
            raise ValueError(f"form must be 'eq1' or 'bt', got {form!r}")
        self.sigma, _ = get_activation(activation)
        self.form = form
        self.A = nn.Linear(dim, dim if form == "eq1" else hidden)
        self.B = nn.Linear(dim, hidden, bias=False) if form == "bt" else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.sigma(self.A(z))
        return s if self.B is None else s @ self.B.weight


class ResidualLayer(nn.Module):
    """``z + σ(Az + b)`` (eq. 2) when ``form='eq2'``, ``z + h Bᵀσ(Az + b)`` (Section 4) when ``form='bt'``."""

    def __init__(self, dim: int, hidden: int, activation: str = "tanh", h: float = 1.0, form: str = "bt") -> None:
        super().__init__()
        _check_positive(h=h)
        self.body = MLPLayer(dim, hidden, activation, "eq1" if form == "eq2" else form)
        self.h = h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.h * self.body(z)


class ResidualBlock(nn.Module):
    """``x + B σ(Ax + b)`` (snippet 2)."""

    def __init__(self, dim: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.sigma, _ = get_activation(activation)
        self.A = nn.Linear(dim, hidden)
        self.B = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.B(self.sigma(self.A(x)))


class ConvResidualBlock(nn.Module):
    """``x + B σ(Ax + b)`` with ``A``, ``B`` 3×3 convolutions (snippet 2, convolutional)."""

    def __init__(self, channels: int, hidden: int, activation: str = "relu", kernel_size: int = 3) -> None:
        super().__init__()
        self.sigma, _ = get_activation(activation)
        pad = kernel_size // 2
        self.A = nn.Conv2d(channels, hidden, kernel_size, padding=pad)
        self.B = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.B(self.sigma(self.A(x)))


class _GradientFlowBlock(nn.Module):
    r"""Explicit Euler on ``ẋ = −∇V(x) = −Aᵀσ(Ax + b)`` over time ``T`` in ``n`` sub-steps.

    .. math::  x \mapsto x - h A^\top \sigma(Ax + b), \qquad h = T/n \le \frac{2}{k\|A\|_2^2}  \quad (18), (19)

    ``n`` is the smallest integer meeting eq. (19) for the current norm: the power-method estimate times
    ``1 + margin`` in training, the certified bound in eval mode.  Each sub-step is then 1-Lipschitz
    (Section 3.2), hence so is the block.

    ``max_norm = c`` (optional) uses ``A·min(1, c/‖A‖)`` in place of ``A`` — still a gradient flow of a convex
    potential, so the guarantee is unchanged — which caps the sub-step count at ``⌈T k c² (1+margin)/2⌉``
    when the optimizer inflates ``‖A‖`` (the cost of an epoch otherwise grows with ``‖A‖²``).
    """

    def _init_flow(self, T: float, activation: str, margin: float, max_norm: float | None = None) -> None:
        _check_positive(T=T)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if max_norm is not None:
            _check_positive(max_norm=max_norm)
        self.T = float(T)
        self.margin = float(margin)
        self.max_norm = max_norm
        self.activation = activation
        self.act, self.k = get_activation(activation, monotone=True)

    @property
    def n_steps(self) -> int:
        margin = self.margin if self.training else 0.0
        return substeps_for(self.capped_norm(), self.T, self.k, margin)

    def _apply_A(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apply_At(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        n = n_steps or self.n_steps
        h = self.T / n
        w = self.capped_weight()
        for _ in range(n):
            x = x - h * self._apply_At(self.act(self._apply_A(x, w)), w)
        return x

    def lipschitz_bound(self) -> float:
        """1, by eq. (19) with the certified norm (eval-mode sub-steps)."""
        return 1.0


class NonExpansiveBlock(_GradientFlowBlock, DenseTracked):
    """Dense non-expansive block of snippet 1: ``A ∈ R^{hidden×dim}``."""

    def __init__(self, dim: int, hidden: int | None = None, T: float = 1.0, activation: str = "relu",
                 margin: float = 0.01, max_norm: float | None = None) -> None:
        super().__init__()
        self._init_flow(T, activation, margin, max_norm)
        self.lin = nn.Linear(dim, hidden or dim)
        self._init_tracking((dim,))

    def _apply_A(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.lin.bias)

    def _apply_At(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return v @ weight


class NonExpansiveConvBlock(_GradientFlowBlock, ConvTracked):
    """Convolutional non-expansive block: ``A`` a stride-1 'same' convolution on ``in_shape``, ``Aᵀ`` its adjoint.

    The tracked norm is that of the operator on the actual input shape (padding included), not of the
    reshaped kernel.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        hidden: int | None = None,
        kernel_size: int = 3,
        T: float = 1.0,
        activation: str = "relu",
        margin: float = 0.01,
        max_norm: float | None = None,
    ) -> None:
        super().__init__()
        self._init_flow(T, activation, margin, max_norm)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a shape-preserving block, got {kernel_size}")
        self.in_shape = tuple(int(s) for s in in_shape)
        c = self.in_shape[0]
        self.conv = nn.Conv2d(c, hidden or c, kernel_size, padding=kernel_size // 2)
        self._init_tracking((1, *self.in_shape))

    def _apply_A(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, self.conv.bias, padding=self.conv.padding)

    def _apply_At(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(v, weight, padding=self.conv.padding)


def symplectic_J(d2: int, dtype=None, device=None) -> torch.Tensor:
    """The canonical symplectic matrix ``J = [[0, I], [−I, 0]]`` of eq. (20)."""
    d = d2 // 2
    eye = torch.eye(d, dtype=dtype, device=device)
    zero = torch.zeros(d, d, dtype=dtype, device=device)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)


class _HamiltonianBlock(nn.Module):
    """State ``x = (q, p) ∈ R^{2d}``, step size ``h``, activation ``σ = γ'``."""

    def __init__(self, dim: int, h: float, activation: str) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"a Hamiltonian block needs an even dimension, got {dim}")
        _check_positive(h=h)
        self.sigma, _ = get_activation(activation)
        self.h = h


class HamiltonianEulerBlock(_HamiltonianBlock):
    r"""Explicit Euler step of a Hamiltonian field (eq. 26), *not* symplectic:

    .. math::  \Phi(x) = x + h J A^\top \sigma(Ax + a),  \qquad H(x) = \langle 1, \gamma(Ax + a)\rangle, \gamma' = \sigma
    """

    def __init__(self, dim: int, h: float = 0.1, activation: str = "tanh") -> None:
        super().__init__(dim, h, activation)
        self.A = nn.Linear(dim, dim)
        self.register_buffer("J", symplectic_J(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.h * (self.sigma(self.A(x)) @ self.A.weight) @ self.J.t()


class SymplecticEulerBlock(_HamiltonianBlock):
    r"""Symplectic Euler step for the separable Hamiltonian ``K(p) + U(q)`` (eq. 28):

    .. math::  \hat q = q + h B^\top\sigma(Bp + b), \qquad p' = p - h C^\top \sigma(C\hat q + c)

    with ``σ = γ'`` (``tanh`` for ``γ = log cosh``).  Its Jacobian ``∂ψ`` satisfies ``∂ψᵀ J ∂ψ = J`` (eq. 23),
    hence ``‖∂ψ‖₂ ≥ 1`` (eq. 22): no vanishing gradients through a stack of them.
    """

    def __init__(self, dim: int, h: float = 0.1, activation: str = "tanh") -> None:
        super().__init__(dim, h, activation)
        d = dim // 2
        self.B = nn.Linear(d, d)
        self.C = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x.chunk(2, dim=-1)
        q = q + self.h * (self.sigma(self.B(p)) @ self.B.weight)
        p = p - self.h * (self.sigma(self.C(q)) @ self.C.weight)
        return torch.cat([q, p], dim=-1)


class NormalizedConv2d(ConvTracked):
    """A convolution whose weight is rescaled to ``A·min(1, c/‖A‖)`` inside the forward pass (``c = max_norm``).

    Used for the lifting (channel-changing, possibly strided) convolutions of the non-expansive image net.
    ``‖A‖`` is the power-method estimate in training and the certified bound in eval mode, so the layer is
    ``min(c, ‖A‖)``-Lipschitz; ``PowerMethodCallback`` also projects the stored weight back to the cap after
    an optimizer step took it above (:meth:`~SpectrallyTracked.project_`, which leaves the function
    unchanged).  ``max_norm=None`` leaves the weight free: its certified norm is then its Lipschitz bound.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = True, max_norm: float | None = 1.0) -> None:
        super().__init__()
        if max_norm is not None:
            _check_positive(max_norm=max_norm)
        self.max_norm = max_norm
        self.in_shape = tuple(int(s) for s in in_shape)
        self.conv = nn.Conv2d(self.in_shape[0], out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=bias)
        self._init_tracking((1, *self.in_shape))

    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        k = self.conv.kernel_size[0]
        (p,), (st,) = self.conv.padding[:1], self.conv.stride[:1]
        f = lambda n: (n + 2 * p - k) // st + 1  # noqa: E731
        return (self.conv.out_channels, f(h), f(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.capped_weight(), self.conv.bias, stride=self.conv.stride, padding=self.conv.padding)

    def lipschitz_bound(self) -> float:
        """``min(c, ‖A‖)`` with the certified ``‖A‖`` (eval-mode forward)."""
        bound = float(self.norm_bound())
        return bound if self.max_norm is None else min(bound, self.max_norm)


class NormalizedLinear(DenseTracked):
    """A linear layer divided by ``max(1, ‖W‖)`` in the forward pass (1-Lipschitz), for a constrained head."""

    max_norm = 1.0

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, out_features, bias=bias)
        self._init_tracking((in_features,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.capped_weight(), self.lin.bias)

    def lipschitz_bound(self) -> float:
        return 1.0
