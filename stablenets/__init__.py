"""stablenets: neural networks whose stability is designed in through continuous dynamical systems.

The Python API lives in :mod:`stablenets.api` (``compose``, ``train``, ``evaluate``, ``load_run``,
``load_model``); all but ``train`` are also importable from here — ``stablenets.train`` is the module behind
``stablenets-train``.  Nothing heavy is imported until one of them is used.
"""

from .resolvers import register as _register_resolvers

__version__ = "0.1.0"
_register_resolvers()

_API = ("compose", "evaluate", "load_run", "load_model")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
