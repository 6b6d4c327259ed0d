"""Base class for layers whose Lipschitz control depends on a tracked spectral norm.

Each such layer owns a power-method vector ``u`` (a buffer of known shape, created in ``__init__`` so
checkpoints restore it) and the running estimate ``sigma``.  ``PowerMethodCallback`` advances them after
every optimizer step through :meth:`update_norm_estimate`; :meth:`norm_bound` is the certified upper
bound used in eval mode and by :meth:`lipschitz_bound`.
"""
from __future__ import annotations

import torch
from torch import nn

from .power import Operator, conv_norm_bound, conv_ops, dense_norm_bound, dense_ops, power_method


class SpectrallyTracked(nn.Module):
    """Mixin for a module with one tracked linear operator (``self.weight``)."""

    weight: nn.Parameter
    u: torch.Tensor
    sigma: torch.Tensor
    max_norm: float | None = None  # the norm cap c (None: the weight is used as it is)

    def _init_tracking(self, u_shape: tuple[int, ...], warm_iters: int = 50) -> None:
        self.register_buffer("u", torch.randn(u_shape))
        self.register_buffer("sigma", torch.ones(()))
        self._bound_cache: tuple[tuple[int, int], torch.Tensor] | None = None
        # "before training, we run many iterations of the power method" (Section 6)
        self.update_norm_estimate(n_iters=warm_iters)

    # -- operators -------------------------------------------------------------------------------
    def operators(self) -> tuple[Operator, Operator]:
        raise NotImplementedError

    def _exact_bound(self) -> torch.Tensor:
        raise NotImplementedError

    # -- estimates -------------------------------------------------------------------------------
    @torch.no_grad()
    def update_norm_estimate(self, n_iters: int = 1, tol: float = 0.0, max_iters: int | None = None) -> int:
        """Warm-started power iterations (eq. 31); returns how many were taken."""
        op, op_t = self.operators()
        sigma, u, its = power_method(op, op_t, self.u, n_iters=n_iters, tol=tol, max_iters=max_iters)
        self.u.copy_(u)
        self.sigma.copy_(sigma)
        return its

    # -- norm cap: the forward pass uses A·min(1, c/‖A‖) when max_norm = c is set --------------------
    def capped_weight(self) -> torch.Tensor:
        if self.max_norm is None:
            return self.weight
        return self.weight * (self.max_norm / self.current_norm()).clamp(max=1.0)

    def capped_norm(self) -> torch.Tensor:
        """``min(c, ‖A‖)``: the norm of :meth:`capped_weight` (estimate in training, certified in eval)."""
        norm = self.current_norm()
        return norm if self.max_norm is None else norm.clamp(max=self.max_norm)

    @torch.no_grad()
    def project_(self) -> bool:
        """Rescale the stored weight to the norm cap when the estimate exceeds it; returns whether it did.

        The forward pass uses ``A·min(1, c/σ)``, so the projection ``A ← A·c/σ`` (and ``σ ← c``) leaves the
        layer's function unchanged.  It only stops the *stored* weight from inflating: with ``‖A‖ ≫ c`` every
        optimizer update of the effective weight shrinks by ``c/‖A‖`` and training stalls.
        """
        if self.max_norm is None or not float(self.sigma) > self.max_norm:
            return False
        self.weight.mul_(self.max_norm / self.sigma)
        self.sigma.fill_(self.max_norm)
        return True

    def norm_bound(self) -> torch.Tensor:
        """Certified upper bound of ``‖A‖₂``, cached until the weight changes (tracked by its version)."""
        key = (self.weight._version, self.weight.data_ptr())
        if self._bound_cache is None or self._bound_cache[0] != key:
            self._bound_cache = (key, self._exact_bound().detach())
        return self._bound_cache[1]

    def current_norm(self) -> torch.Tensor:
        """Training: the power-method estimate.  Eval: the certified bound (no power iteration runs)."""
        return self.sigma if self.training else self.norm_bound()


class DenseTracked(SpectrallyTracked):
    """Tracks ``self.lin.weight`` (a dense matrix); the certified bound is its exact SVD norm."""

    lin: nn.Linear

    @property
    def weight(self) -> nn.Parameter:
        return self.lin.weight

    def operators(self) -> tuple[Operator, Operator]:
        return dense_ops(self.weight)

    def _exact_bound(self) -> torch.Tensor:
        return dense_norm_bound(self.weight)


class ConvTracked(SpectrallyTracked):
    """Tracks the operator of ``self.conv`` on inputs of shape ``self.in_shape`` (stride and padding included)."""

    conv: nn.Conv2d
    in_shape: tuple[int, int, int]

    @property
    def weight(self) -> nn.Parameter:
        return self.conv.weight

    def operators(self) -> tuple[Operator, Operator]:
        return conv_ops(self.weight, self.in_shape, stride=self.conv.stride[0], padding=self.conv.padding[0])

    def _exact_bound(self) -> torch.Tensor:
        return conv_norm_bound(self.weight, self.in_shape, stride=self.conv.stride[0], padding=self.conv.padding[0])
