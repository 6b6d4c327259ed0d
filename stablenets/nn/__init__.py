"""Layers, one mechanism per module: the power method (``power``), certified norms (``norms``, the one routine
every certified bound goes through), tracked spectral layers
(``spectral``), gradient-flow blocks (``gradient_flow``), residual and Hamiltonian layers (``residual``,
``hamiltonian``), activations, and certified bounds of composed networks (``bounds``).  The 1-Lipschitz layer
families of the field (CPL, SLL, AOL, SOC, Cayley, LOT, BCOP, Sandwich) are in :mod:`stablenets.nn.layers`,
one module each."""

from .activations import ACTIVATIONS, get_activation
from .bounds import UnknownLayerError, lipschitz_bound
from .gradient_flow import GradientFlowBlock, NonExpansiveBlock, NonExpansiveConvBlock, substeps_for
from .hamiltonian import HamiltonianEulerBlock, SymplecticEulerBlock, symplectic_J
from .norms import conv_norm_bound, dense_norm_bound
from .power import conv_ops, dense_ops, power_method
from .residual import ConvResidualBlock, MLPLayer, ResidualBlock, ResidualLayer
from .spectral import SpectralConv2d, SpectralLinear, SpectralOperator

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "UnknownLayerError",
    "lipschitz_bound",
    "GradientFlowBlock",
    "NonExpansiveBlock",
    "NonExpansiveConvBlock",
    "substeps_for",
    "HamiltonianEulerBlock",
    "SymplecticEulerBlock",
    "symplectic_J",
    "conv_norm_bound",
    "conv_ops",
    "dense_norm_bound",
    "dense_ops",
    "power_method",
    "ConvResidualBlock",
    "MLPLayer",
    "ResidualBlock",
    "ResidualLayer",
    "SpectralConv2d",
    "SpectralLinear",
    "SpectralOperator",
]
