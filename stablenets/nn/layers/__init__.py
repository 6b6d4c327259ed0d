"""The 1-Lipschitz layer families of the field, one module each, dense and convolutional where the method
defines both (the families compared by Prach, Brau, Buttazzo & Lampert, "1-Lipschitz Layers Compared", CVPR 2024):

* ``cpl``      — Convex Potential Layer: the paper's gradient-flow block with one step ``h = 2/‖W‖²``;
* ``sll``      — SDP-based Lipschitz Layer ``x − 2WᵀT⁻¹σ(Wx + b)``;
* ``aol``      — Almost-Orthogonal Layer ``W diag(Σ_j |WᵀW|_ij)^(-1/2)``;
* ``soc``      — Skew Orthogonal Convolution ``exp(L)x`` by its truncated series (truncation in the bound);
* ``cayley``   — Cayley transform, per frequency for convolutions (circular);
* ``lot``      — ``V(VᴴV)^(-1/2)`` by Newton–Schulz, per frequency for convolutions (circular);
* ``bcop``     — block convolution orthogonal parameterization (convolution only);
* ``sandwich`` — the sandwich layer ``√2AᵀΨσ(√2Ψ⁻¹Bx + b)``, per frequency for convolutions (circular);
* ``bro``      — block reflector orthogonal ``I − 2V(VᴴV)⁻¹Vᴴ`` per frequency (convolution only);
* ``aoc``      — adaptive orthogonal convolution, through the ``orthogonium`` package (convolution only);
* ``gradient_flow`` — the paper's block (eq. 18-19) with a learned flow time and adaptive sub-steps (convolution
  only), of which CPL is the one-step case.

Common signature: dense ``Family Linear(in_features, out_features=None, ...)``; convolutional
``Family Conv2d(in_shape, out_channels=None, kernel_size=3, ...)`` on inputs of shape ``in_shape = (C, H, W)``
(stride 1, same size out).  Residual families (CPL, SLL, gradient flow) keep the width (``hidden``: the inner
width).  Every layer is a :class:`~.base.LipschitzLayer`: ``operator()``, ``lipschitz_bound()`` (a certified upper
bound of its eval-mode map, which :func:`stablenets.nn.bounds.lipschitz_bound` composes with the other parts of a
network) and ``plain()`` (its export form).
"""

from .aoc import AOCConv2d
from .aol import AOLConv2d, AOLLinear
from .base import LipschitzLayer
from .bcop import BCOPConv2d
from .bro import BROConv2d
from .cayley import CayleyConv2d, CayleyLinear
from .cpl import CPLConv2d, CPLLinear
from .flow import GradientFlowConv2d
from .lot import LOTConv2d, LOTLinear
from .sandwich import SandwichConv2d, SandwichLinear
from .sll import SLLConv2d, SLLLinear
from .soc import SOCConv2d, SOCLinear

#: family -> (dense class or None, convolutional class or None)
FAMILIES = {
    "cpl": (CPLLinear, CPLConv2d),
    "sll": (SLLLinear, SLLConv2d),
    "aol": (AOLLinear, AOLConv2d),
    "soc": (SOCLinear, SOCConv2d),
    "cayley": (CayleyLinear, CayleyConv2d),
    "lot": (LOTLinear, LOTConv2d),
    "bcop": (None, BCOPConv2d),
    "sandwich": (SandwichLinear, SandwichConv2d),
    "bro": (None, BROConv2d),
    "aoc": (None, AOCConv2d),
    "gradient_flow": (None, GradientFlowConv2d),
}

__all__ = [
    "FAMILIES",
    "LipschitzLayer",
    "AOCConv2d",
    "BROConv2d",
    "GradientFlowConv2d",
    "AOLConv2d",
    "AOLLinear",
    "BCOPConv2d",
    "CayleyConv2d",
    "CayleyLinear",
    "CPLConv2d",
    "CPLLinear",
    "LOTConv2d",
    "LOTLinear",
    "SandwichConv2d",
    "SandwichLinear",
    "SLLConv2d",
    "SLLLinear",
    "SOCConv2d",
    "SOCLinear",
]
