"""Continuous dynamical systems of the paper: integrators on the harmonic oscillator (Section 2) and
ground-truth systems with a stable equilibrium (Section 5)."""

from .ground_truth import SYSTEMS

__all__ = ["SYSTEMS"]
