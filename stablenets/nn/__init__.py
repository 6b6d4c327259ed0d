"""Layers: power method, gradient-flow (non-expansive) blocks, residual and Hamiltonian blocks."""
from .activations import ACTIVATIONS, get_activation
from .blocks import (
    ConvResidualBlock,
    HamiltonianEulerBlock,
    MLPLayer,
    NonExpansiveBlock,
    NonExpansiveConvBlock,
    NormalizedConv2d,
    NormalizedLinear,
    ResidualBlock,
    ResidualLayer,
    SymplecticEulerBlock,
    substeps_for,
    symplectic_J,
)
from .constrained import SpectrallyTracked
from .power import conv_norm_bound, conv_ops, dense_norm_bound, dense_ops, power_method

__all__ = [
    "ACTIVATIONS", "get_activation", "ConvResidualBlock", "HamiltonianEulerBlock", "MLPLayer",
    "NonExpansiveBlock", "NonExpansiveConvBlock", "NormalizedConv2d", "NormalizedLinear", "ResidualBlock",
    "ResidualLayer", "SymplecticEulerBlock", "substeps_for", "symplectic_J", "SpectrallyTracked",
    "conv_norm_bound", "conv_ops", "dense_norm_bound", "dense_ops", "power_method",
]
