"""stablenets: neural networks whose stability is designed in through continuous dynamical systems."""

from .resolvers import register as _register_resolvers

__version__ = "0.1.0"
_register_resolvers()
