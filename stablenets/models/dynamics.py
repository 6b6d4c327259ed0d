r"""Vector fields ``X: R^d → R^d`` for learning dynamics with a prescribed stable equilibrium ``x̄`` (Section 5.1).

* :class:`VectorFieldMLP` — unconstrained ``X̂``.
* :class:`LyapunovStableField` — eq. (29) (Kolter & Manek):

  .. math::  X(x) = \hat X(x)
             - \nabla V(x)\,\frac{\mathrm{ReLU}(\nabla V(x)^\top \hat X(x) + \mu V(x))}{\|\nabla V(x)\|_2^2}

  with ``V(x) = s(g(x) − g(x̄)) + ε‖x − x̄‖²``, ``g`` an input-convex network and ``s`` a smoothed ReLU
  (convex, non-decreasing, ``s(0) = 0``): ``V`` is convex, ``V(x̄) = 0``, ``V > 0`` elsewhere, and
  ``⟨∇V, X⟩ ≤ −μV`` everywhere (Exercise 13).
* :class:`ContractingField` — eq. (30) (Jaffe et al.): ``X(x) = A(x)(x − x̄)`` with
  ``A(x) = S(x) − (L(x)L(x)ᵀ + εI)``, ``S`` skew-symmetric, so ``Sym(A) = −(LLᵀ + εI)`` is negative definite
  and ``d/dt ½‖x − x̄‖² ≤ −ε‖x − x̄‖²``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_count, check_positive


def _mlp(d_in: int, d_out: int, width: int, depth: int) -> nn.Sequential:
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, d_out))


class VectorFieldMLP(nn.Module):
    """An unconstrained vector field ``X̂: R^d → R^{out_dim}``, the baseline of Section 5.1.

    A multi-layer perceptron with ``tanh`` hidden layers; nothing makes its equilibrium stable (compare
    :class:`LyapunovStableField`, eq. 29, and :class:`ContractingField`, eq. 30).

    Args:
        in_shape: the state's shape (no batch axis), from the data module; ``d`` is the product of its sizes.
        out_dim: the output dimension, from the data module (``d`` for a vector field).
        width: the width of the hidden layers.
        depth: the number of hidden ``Linear + tanh`` layers (then a linear output layer).

    Shape: ``(B, d) → (B, out_dim)``.
    """

    def __init__(self, in_shape, out_dim: int, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        check_count(depth=depth, width=width)
        self.f = _mlp(math.prod(in_shape), out_dim, width, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class ICNN(nn.Module):
    """Input-convex network: ``z_{k+1} = softplus(W_k z_k + U_k x + b_k)`` with ``W_k ≥ 0``."""

    def __init__(self, d: int, width: int, depth: int) -> None:
        super().__init__()
        self.U = nn.ModuleList(nn.Linear(d, width) for _ in range(depth))
        self.W = nn.ParameterList(nn.Parameter(torch.rand(width, width) / width) for _ in range(depth - 1))
        self.out_U = nn.Linear(d, 1)
        self.out_W = nn.Parameter(torch.rand(1, width) / width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.softplus(self.U[0](x))
        for U, W in zip(self.U[1:], self.W):
            z = F.softplus(U(x) + z @ F.relu(W).t())
        return (self.out_U(x) + z @ F.relu(self.out_W).t()).squeeze(-1)


def smooth_relu(v: torch.Tensor, d: float = 0.1) -> torch.Tensor:
    """0 for ``v ≤ 0``, ``v²/(2d)`` on ``[0, d]``, ``v − d/2`` beyond: convex, non-decreasing, C¹."""
    return torch.where(v <= 0, torch.zeros_like(v), torch.where(v < d, v * v / (2 * d), v - d / 2))


class LyapunovStableField(nn.Module):
    """A vector field with a prescribed stable equilibrium ``x̄``, made so by a learned Lyapunov function (eq. 29).

    ``X(x) = X̂(x) − ∇V(x) ReLU(∇V(x)ᵀX̂(x) + μV(x)) / ‖∇V(x)‖²`` (Kolter & Manek) with ``X̂`` an MLP shifted
    so that ``X̂(x̄) = 0`` and ``V(x) = s(g(x) − g(x̄)) + ε‖x − x̄‖²``, ``g`` an input-convex network and ``s`` a
    smoothed ReLU: ``V`` is convex and positive definite, and ``⟨∇V, X⟩ ≤ −μV`` everywhere (Exercise 13).

    Args:
        in_shape: the state's shape (no batch axis), from the data module; ``d`` is the product of its sizes.
        out_dim: the output dimension of ``X̂``, from the data module; it must equal ``d``.
        width: the width of the hidden layers of ``X̂`` and of the input-convex network ``g``.
        depth: the number of hidden layers of ``X̂`` and of ``g``.
        mu: the decay rate ``μ > 0`` imposed on ``V`` along the flow.
        eps: the weight ``ε > 0`` of the quadratic term of ``V`` (makes ``V`` strictly positive away from ``x̄``).
        equilibrium: ``x̄``, ``d`` numbers; ``None``: the origin.

    Shape: ``(B, d) → (B, d)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        width: int = 64,
        depth: int = 2,
        mu: float = 0.1,
        eps: float = 0.01,
        equilibrium: list[float] | None = None,
    ) -> None:
        super().__init__()
        d = math.prod(in_shape)
        check_count(depth=depth, width=width)
        check_positive(mu=mu, eps=eps)
        self.f_hat = _mlp(d, out_dim, width, depth)
        self.g = ICNN(d, width, depth)
        self.mu, self.eps = mu, eps
        self.register_buffer("x_bar", torch.tensor(equilibrium or [0.0] * d, dtype=torch.float32))

    def V(self, x: torch.Tensor) -> torch.Tensor:
        return smooth_relu(self.g(x) - self.g(self.x_bar[None])) + self.eps * (x - self.x_bar).pow(2).sum(-1)

    def V_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            v = self.V(x)
            (grad,) = torch.autograd.grad(v.sum(), x, create_graph=torch.is_grad_enabled() and self.training)
        return v, grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.f_hat(x) - self.f_hat(self.x_bar[None].to(x.dtype))  # X̂(x̄) = 0: x̄ stays an equilibrium
        v, grad = self.V_and_grad(x)
        gn2 = grad.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)  # ∇V = 0 only at x̄, where the ReLU term is 0
        correction = F.relu((grad * x_hat).sum(-1, keepdim=True) + self.mu * v[:, None])
        return x_hat - grad * correction / gn2


class ContractingField(nn.Module):
    """A vector field contracting towards a prescribed equilibrium ``x̄`` (eq. 30, Jaffe et al.).

    ``X(x) = A(x)(x − x̄)`` with ``A(x) = S(x) − (L(x)L(x)ᵀ + εI)``, ``S`` skew-symmetric, ``S`` and ``L`` read
    from the ``2d²`` outputs of an MLP: ``Sym(A) = −(LLᵀ + εI)`` is negative definite, so
    ``d/dt ½‖x − x̄‖² ≤ −ε‖x − x̄‖²`` and ``x̄`` is globally exponentially stable.

    Args:
        in_shape: the state's shape (no batch axis), from the data module; ``d`` is the product of its sizes.
        out_dim: the output dimension, from the data module; not used (the field has the state's dimension).
        width: the width of the hidden layers of the MLP that outputs ``S`` and ``L``.
        depth: the number of hidden ``Linear + tanh`` layers of that MLP.
        eps: ``ε > 0``, the least contraction rate.
        equilibrium: ``x̄``, ``d`` numbers; ``None``: the origin.

    Shape: ``(B, d) → (B, d)``.
    """

    def __init__(
        self,
        in_shape,
        out_dim: int,
        width: int = 64,
        depth: int = 2,
        eps: float = 0.1,
        equilibrium: list[float] | None = None,
    ) -> None:
        super().__init__()
        d = math.prod(in_shape)
        check_count(depth=depth, width=width)
        check_positive(eps=eps)
        self.d, self.eps = d, eps
        self.net = _mlp(d, 2 * d * d, width, depth)
        self.register_buffer("x_bar", torch.tensor(equilibrium or [0.0] * d, dtype=torch.float32))

    def matrix(self, x: torch.Tensor) -> torch.Tensor:
        """``A(x)`` with ``Sym(A) = −(LLᵀ + εI)``."""
        out = self.net(x).reshape(-1, 2, self.d, self.d)
        M, L = out[:, 0], out[:, 1]
        eye = torch.eye(self.d, dtype=x.dtype, device=x.device)
        return (M - M.transpose(1, 2)) / 2 - (L @ L.transpose(1, 2) + self.eps * eye)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.matrix(x) @ (x - self.x_bar)[..., None]).squeeze(-1)
