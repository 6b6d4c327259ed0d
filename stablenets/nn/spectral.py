r"""Linear maps whose spectral norm is tracked by the power method and certified in eval mode.

:class:`SpectralLinear` and :class:`SpectralConv2d` own a weight ``A`` (dense, or a convolution on a
fixed input shape), a bias, the power method's right singular vector estimate ``u`` (a buffer of known
shape, created in ``__init__`` so that checkpoints restore it) and the running estimate ``norm_estimate``.

* **Training** uses ``norm_estimate`` (eq. 31, warm-started; ``PowerMethodCallback`` advances it after every
  optimizer step).  It approaches ``‖A‖₂`` from below and certifies nothing.
* **Eval mode** uses :meth:`certified_norm`, an upper bound of ``‖A‖₂`` (:mod:`~stablenets.nn.norms`: the matrix,
  or the Fourier symbol of the convolution) computed in float64.  It is cached *by content*: the cached value is
  reused only while the weight holds exactly the values it was computed from (``torch.equal`` on a copy), so no
  optimizer (fused, foreach, for-loop), ``.data`` write, checkpoint load, device move or dtype change can
  leave it stale.

``max_norm = c`` constrains the map used in the forward pass:

* cap (default): ``A·min(1, c/‖A‖)`` — Lipschitz ``min(c, ‖A‖)``;
* ``exact=True``: ``A·c/‖A‖`` — Lipschitz exactly ``c`` (a normalised layer).

In eval mode the scale factor is computed from the certified norm in float64, rounded *down* to the
weight's dtype, and the certified norm of the scaled weight the forward pass actually applies is checked
against the reported bound (see :meth:`SpectralOperator._verified`): the eval-mode map with the stored
weights is never above :meth:`lipschitz_bound`, in exact arithmetic on those weights; the rounding of
the forward's own arithmetic is what the blocks' ``eval_margin`` covers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_positive
from .convolution import PADDING_MODES, PlainConv, conv_same, conv_same_adjoint
from .norms import circular_conv_norm_bound, conv_norm_bound, dense_norm_bound, round_down
from .power import Operator, conv_adjoint, conv_geometry, conv_ops, conv_output_size, power_method


def bjorck(w: torch.Tensor, iters: int = 12, beta: float = 0.5) -> torch.Tensor:
    """Björck–Bowie iterations ``W ← (1+β)W − β (WWᵀ)W``: the nearest (semi-)orthogonal matrix to ``W`` when
    its singular values start in ``(0, √3)``; every singular value is driven to 1.

    For a wide ``W₀`` (r × c, r < c) every iterate is ``W_k = M_k W₀`` with ``M_{k+1} = (1+β)M_k − β M_k G M_kᵀ M_k``,
    ``G = W₀W₀ᵀ`` (r × r): the iterations run on ``M`` and cost r³ each instead of r²c, and ``W₀`` is multiplied
    once at the end.  The same iterates in exact arithmetic; whichever form costs less is used."""
    tall = w.shape[0] > w.shape[1]
    w = w.t() if tall else w
    r, c = w.shape
    if 2 * r * c + 3 * r * r * iters < 2 * r * c * iters:  # the Gram form costs less
        g = w @ w.t()
        m = torch.eye(r, dtype=w.dtype, device=w.device)
        for _ in range(iters):
            m = (1 + beta) * m - beta * ((m @ g) @ m.t()) @ m
        w = m @ w
    else:
        for _ in range(iters):
            w = (1 + beta) * w - beta * (w @ w.t()) @ w
    return w.t() if tall else w


class SpectralOperator(nn.Module):
    """Base class: a linear operator ``A`` with tracked and certified spectral norm (see the module docstring).

    Subclasses set ``weight``, ``bias`` and implement :meth:`matvec`, :meth:`rmatvec` and :meth:`_certify`.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    u: torch.Tensor
    norm_estimate: torch.Tensor
    #: training only: divide by ``‖Au‖`` (``u`` the power method's vector) with its gradient, so that the optimizer
    #: sees the normalisation (as PyTorch's spectral normalisation and CPL's reference code), rather than by the
    #: estimate as a constant; the value is the same to the rounding of one product
    norm_gradient: bool = False
    #: Björck iterations of the per-step retraction (``orthogonal``); it starts from the previous step's
    #: (semi-)orthogonal weight moved by one optimizer step, so few suffice: 4 reach the 12-iteration result
    #: to float32 rounding for steps of up to 1e-2 per entry (tests/test_step_cost.py), at a third of the cost
    step_bjorck_iters: int = 4

    def __init__(
        self,
        u_shape: tuple[int, ...],
        max_norm: float | None = None,
        exact: bool = False,
        orthogonal: bool = False,
        warm_iters: int = 50,
    ) -> None:
        super().__init__()
        check_positive(max_norm=max_norm)
        if exact and max_norm is None:
            raise ValueError("exact=True normalises to max_norm: set max_norm")
        if orthogonal and not exact:
            raise ValueError("orthogonal=True needs exact=True (a normalised layer)")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.exact, self.orthogonal = bool(exact), bool(orthogonal)
        self.register_buffer("u", torch.randn(u_shape))
        self.register_buffer("norm_estimate", torch.ones(()))
        self._cert: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight copy, its certified norm)
        self._scale: tuple | None = None  # (that certified norm, verified eval scale, bound)
        self._warm_iters = warm_iters

    def _start_tracking(self) -> None:
        if self.weight.is_meta:  # built on the meta device (a model's size counted): no values to iterate on
            return
        if self.orthogonal:
            with torch.no_grad():
                w = self.weight.view(len(self.weight), -1)
                w.copy_(bjorck(w / torch.linalg.matrix_norm(w, 2), iters=30))
        # "before training, we run many iterations of the power method" (Section 6)
        self.update_norm_estimate(n_iters=self._warm_iters)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        old = prefix + "sigma"  # checkpoints written before the estimate was named ``norm_estimate``
        if old in state_dict and prefix + "norm_estimate" not in state_dict:
            state_dict[prefix + "norm_estimate"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the operator ----------------------------------------------------------------------------
    def matvec(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``A x (+ b)`` with the given weight."""
        raise NotImplementedError

    def rmatvec(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``Aᵀ v`` with the given weight (the exact adjoint of :meth:`matvec` without bias)."""
        raise NotImplementedError

    def _certify(self, weight: torch.Tensor) -> torch.Tensor:
        """Certified upper bound of ``‖A‖₂`` for ``weight`` (float64)."""
        raise NotImplementedError

    def operators(self) -> tuple[Operator, Operator]:
        w = self.weight.detach()
        return (lambda u: self.matvec(u, w)), (lambda v: self.rmatvec(v, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x, self.effective_weight(), self.bias)

    # -- norms -----------------------------------------------------------------------------------
    @torch.no_grad()
    def certified_norm(self) -> torch.Tensor:
        """Certified upper bound of ``‖A‖₂`` (float64 scalar), recomputed whenever the weight's values changed."""
        w = self.weight.detach()
        if self._cert is not None:
            ref, value = self._cert
            if ref.device == w.device and ref.dtype == w.dtype and ref.shape == w.shape and torch.equal(ref, w):
                return value
        value = self._certify(w)
        self._cert = (w.clone(), value)
        return value

    def scale(self) -> torch.Tensor | None:
        """The factor applied to the stored weight (``None``: no constraint)."""
        if self.max_norm is None:
            return None
        if self.training:
            sigma = self.norm_estimate
            if self.norm_gradient:  # ‖Au‖ with the estimate's u: its gradient is v uᵀ, as spectral normalisation's
                sigma = self.matvec(self.u, self.weight).norm()
            s = self.max_norm / sigma.clamp_min(1e-30)
            return s if self.exact else s.clamp(max=1.0)
        return self._verified()[0]

    @torch.no_grad()
    def _verified(self) -> tuple[torch.Tensor | None, float]:
        """Eval mode: ``(scale, bound)`` such that the certified norm of ``weight * scale`` — the very tensor
        the forward pass computes — is at most ``bound`` (``c`` when exact, ``min(c, ‖A‖)`` when capped).

        The scale starts at ``c/‖A‖`` rounded down; since the product is rounded entrywise, its certified
        norm is checked and the scale shrunk until it holds (one check in float32, a few in bf16).  Cached
        with the certified norm: recomputed whenever the weight's values change."""
        cert = self.certified_norm()
        w = self.weight.detach()
        if (
            self._scale is not None
            and self._scale[0] is cert
            and not (
                torch.is_tensor(self._scale[1])
                and self._scale[1].is_inference()
                and not torch.is_inference_mode_enabled()
            )
        ):  # a scale from inference mode cannot enter autograd
            return self._scale[1], self._scale[2]
        if self.max_norm is None:
            scale, bound = None, float(cert)
        else:
            target = self.max_norm if self.exact else min(self.max_norm, float(cert))
            s = torch.tensor(self.max_norm, dtype=torch.float64) / cert.cpu().clamp_min(1e-30)
            if not self.exact:
                s = s.clamp(max=1.0)
            scale = round_down(s, w.dtype).to(w.device)
            shrink = 1 - (1e-3 if w.dtype in (torch.bfloat16, torch.float16) else 2.0**-20)
            while scale > 0 and float(self._certify(w * scale)) > target:
                scale = round_down(scale.double() * shrink, w.dtype)
            bound = target
        self._scale = (cert, scale, bound)
        return scale, bound

    def effective_weight(self) -> torch.Tensor:
        if not self.training:
            return self.eval_weight()[0]
        s = self.scale()
        return self.weight if s is None else self.weight * s

    def eval_weight(self) -> tuple[torch.Tensor, float]:
        """Eval mode: the weight the forward pass applies and the certified bound of its map, from one check."""
        scale, bound = self._verified()
        return (self.weight if scale is None else self.weight * scale), bound

    def constrained_norm(self, estimate: float) -> float:
        """The norm of the map the training forward applies when the estimate of ``‖A‖`` is ``estimate``."""
        if self.max_norm is None:
            return estimate
        return self.max_norm if self.exact else min(estimate, self.max_norm)

    def lipschitz_bound(self) -> float:
        """Certified Lipschitz constant of the eval-mode map: ``‖A‖``, ``min(c, ‖A‖)`` or ``c`` (verified on the
        weight the forward pass applies, see :meth:`_verified`)."""
        return self._verified()[1]

    # -- the power method ------------------------------------------------------------------------
    @torch.no_grad()
    def update_norm_estimate(self, n_iters: int = 1, tol: float = 0.0, max_iters: int | None = None) -> int:
        """Warm-started power iterations until converged to ``tol`` (reads the estimate on the host)."""
        op, op_t = self.operators()
        estimate, u, its = power_method(op, op_t, self.u, n_iters=n_iters, tol=tol, max_iters=max_iters)
        self.u.copy_(u)
        self.norm_estimate.copy_(estimate)
        return its

    def power_step(self) -> None:
        """One warm-started iteration of eq. (31), on the device (no host synchronisation): :func:`power_steps`."""
        power_steps([self])

    def project_(self) -> int:
        """Rescale the stored weight to the norm cap where the estimate exceeds it (exact: always to ``c``).

        The forward pass uses ``A·min(1, c/σ̂)`` (or ``A·c/σ̂``, ``σ̂`` the estimate), so ``A ← A·c/σ̂`` and ``σ̂ ← c``
        leave the
        layer's function unchanged.  It only stops the *stored* weight from inflating: with ``‖A‖ ≫ c``
        every optimizer update of the effective weight shrinks by ``c/‖A‖`` and training stalls.

        With ``orthogonal`` the stored weight is also pulled towards a (semi-)orthogonal matrix (Björck
        iterations from ``A/σ̂``, a retraction as in Parseval networks): all singular values near 1, so the
        normalised layer keeps the norm of every signal, not only of its top direction.  The certificate does
        not depend on it: the forward pass still divides by the certified norm.  Returns 1 if it rescaled.
        """
        return project_all([self])


class SpectralLinear(SpectralOperator):
    """A dense layer ``x ↦ A x + b`` with tracked and certified ``‖A‖₂``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        max_norm: float | None = None,
        exact: bool = False,
        orthogonal: bool = False,
    ) -> None:
        super().__init__((in_features,), max_norm, exact, orthogonal)
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight, self.bias = lin.weight, lin.bias
        self.in_features, self.out_features = in_features, out_features
        self._start_tracking()

    def matvec(self, x, weight, bias=None):
        return F.linear(x, weight, bias)

    def rmatvec(self, v, weight):
        return v @ weight

    def _certify(self, weight):
        return dense_norm_bound(weight)

    @torch.no_grad()
    def plain(self) -> nn.Linear:
        """``nn.Linear`` holding the weight the eval-mode forward applies."""
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        lin.weight.copy_(self.eval_weight()[0])
        if self.bias is not None:
            lin.bias.copy_(self.bias)
        return lin.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, max_norm={self.max_norm}, exact={self.exact}"


class SpectralConv2d(SpectralOperator):
    """A convolution on inputs of shape ``in_shape`` = (C, H, W) with tracked and certified operator norm.

    The norm is that of the operator on the actual input shape (padding and stride included), not of the
    reshaped kernel; the certified bound comes from the kernel's Fourier symbol (:func:`conv_norm_bound`).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
        max_norm: float | None = None,
        exact: bool = False,
        orthogonal: bool = False,
        padding_mode: str = "zeros",
        init: str = "default",
    ) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {in_shape}")
        if orthogonal and (kernel_size != 1 or stride != 1):
            raise ValueError("orthogonal=True needs a 1x1 stride-1 convolution (its operator is its channel matrix)")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if padding_mode == "circular" and (
            stride != 1 or kernel_size % 2 != 1 or padding not in (None, kernel_size // 2)
        ):
            raise ValueError("circular padding is for stride-1 'same' convolutions with an odd kernel")
        if padding_mode == "circular" and min(in_shape[1:]) < kernel_size:
            raise ValueError(f"circular padding needs H, W >= kernel_size ({kernel_size}), got in_shape {in_shape}")
        if init not in ("default", "xavier_normal"):
            raise ValueError(f"init must be 'default' (nn.Conv2d's) or 'xavier_normal', got {init!r}")
        super().__init__((1, *in_shape), max_norm, exact, orthogonal)
        self.in_shape, self.padding_mode = in_shape, padding_mode
        padding = kernel_size // 2 if padding is None else padding
        conv = nn.Conv2d(in_shape[0], out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if init == "xavier_normal":  # the CPL reference's (the bias keeps nn.Conv2d's U(±1/√fan_in))
            nn.init.xavier_normal_(conv.weight)
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding = stride, padding
        self._geometry = conv_geometry(self.weight.shape, in_shape, stride, padding)
        self._start_tracking()

    @property
    def out_shape(self) -> tuple[int, int, int]:
        k = self.weight.shape[-1]
        _, h, w = self.in_shape
        return (
            self.weight.shape[0],
            conv_output_size(h, k, self.stride, self.padding),
            conv_output_size(w, k, self.stride, self.padding),
        )

    def matvec(self, x, weight, bias=None):
        if self.padding_mode == "circular":
            return conv_same(x, weight, bias, "circular")
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def rmatvec(self, v, weight):
        if self.padding_mode == "circular":
            return conv_same_adjoint(v, weight, "circular")
        return conv_adjoint(v, weight, **self._geometry)

    def _ops(self, weight) -> tuple[Operator, Operator]:
        if self.padding_mode == "circular":
            return (lambda u: self.matvec(u, weight)), (lambda v: self.rmatvec(v, weight))
        return conv_ops(weight, self.in_shape, self.stride, self.padding)

    def operators(self) -> tuple[Operator, Operator]:
        return self._ops(self.weight.detach())

    def _certify(self, weight):
        if self.padding_mode == "circular":  # exact: the largest singular value of the symbol on the H×W torus
            return circular_conv_norm_bound(weight, self.in_shape)
        return conv_norm_bound(weight, self.in_shape, self.stride, self.padding)

    @torch.no_grad()
    def plain(self) -> nn.Module:
        """``nn.Conv2d`` (circular padding: :class:`~stablenets.nn.convolution.PlainConv`) holding the weight the
        eval-mode forward applies."""
        w = self.eval_weight()[0]
        if self.padding_mode == "circular":
            return PlainConv(w, self.bias, "circular")
        conv = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            tuple(w.shape[-2:]),
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        conv.weight.copy_(w)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv.requires_grad_(False)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.weight.shape[0]}, kernel_size={self.weight.shape[-1]}, "
            f"stride={self.stride}, padding={self.padding}, padding_mode={self.padding_mode}, "
            f"max_norm={self.max_norm}, exact={self.exact}"
        )


# -- the per-step work of PowerMethodCallback, for all layers at once ---------------------------------------
# For the small layers of these nets the cost of a step of the power method is dispatch, not arithmetic: a
# norm, a division and two buffer writes per layer cost as much as its two single-image convolutions.  The
# two functions below do the element-wise work once for all layers (``torch._foreach_*``, as torch.optim's
# foreach optimizers do); the convolutions stay per layer.


@torch.no_grad()
def power_steps(ops: list[SpectralOperator]) -> None:
    """One warm-started iteration of eq. (31) for every operator: ``u ← AᵀAu / ‖AᵀAu‖``, ``σ̂ ← √‖AᵀAu‖``.

    No host synchronisation.  ``AᵀAu + αu`` is normalised instead of ``AᵀAu`` (``α = 10⁻¹⁵`` in float32, bf16
    and float64): the same vector to float32 rounding whenever ``‖A‖ ≥ 10⁻⁴``, and ``u`` itself (a unit vector,
    with ``σ̂ = √α``) when ``u`` lies in the null space — a zero ``u`` would never leave it."""
    if not ops:
        return
    ws = [m.rmatvec(m.matvec(m.u, w), w) for m in ops for w in (m.weight.detach(),)]
    us = [m.u for m in ops]
    tiny = torch.finfo(us[0].dtype).tiny
    torch._foreach_add_(ws, us, alpha=1e-15 if tiny < 1e-30 else tiny**0.5)  # α² stays a normal number
    norms = torch._foreach_norm(ws)
    torch._foreach_div_(ws, norms)
    torch._foreach_copy_(us, ws)
    torch._foreach_copy_([m.norm_estimate for m in ops], torch._foreach_sqrt(norms))


@torch.no_grad()
def project_all(ops: list[SpectralOperator], estimates: list[float] | None = None) -> int:
    """:meth:`SpectralOperator.project_` of every operator; returns how many weights it rescaled.

    ``estimates``: the operators' ``σ̂`` as host numbers (the callback has just read them), else read here.
    From them the host decides which weights move — capped layers only when ``σ̂ > c``, normalised ones when
    ``σ̂ ≠ c`` — so a step where nothing exceeds its cap costs no tensor operation: ``A ← (c/σ̂)·A`` and
    ``σ̂ ← c`` exactly (not ``σ̂·s``, whose rounding could leave it a hair above the cap and re-project every
    step).  (Semi-)orthogonal layers each take their Björck retraction from ``A/σ̂``."""
    if estimates is None:
        estimates = torch.stack([m.norm_estimate for m in ops]).tolist() if ops else []
    done = 0
    for m, sigma in zip(ops, estimates):
        if m.max_norm is None:
            continue
        if m.orthogonal:
            w = m.weight.view(len(m.weight), -1)
            w.copy_(bjorck(w / max(sigma, 1e-30), iters=m.step_bjorck_iters))
            m.norm_estimate.fill_(1.0)
        elif sigma > m.max_norm or (m.exact and sigma != m.max_norm):
            m.weight.mul_(m.max_norm / max(sigma, 1e-30))
            m.norm_estimate.fill_(m.max_norm)
        else:
            continue
        done += 1
    return done
