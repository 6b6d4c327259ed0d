"""stablenets: neural networks whose stability is designed in through continuous dynamical systems."""

__version__ = "0.1.0"
