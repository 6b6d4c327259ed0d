"""stablenets: neural networks whose stability is designed in through continuous dynamical systems.

Two layers.  The science — ``nn`` (layers and their bound rules), ``models``, ``tasks``, ``losses``,
``robustness``, ``data``, ``systems``, ``baselines``, ``plotting``, ``callbacks`` and the ``contracts``
between them — never imports the runner.  ``runner`` builds runs from Hydra configs, launches them (DDP,
sweeps), and records, reports and collects their results.  The public entry points sit at the root:
``stablenets.train`` (``stablenets-train``), ``stablenets.eval`` (``stablenets-eval``),
``stablenets.collect`` (``stablenets-collect``) and the Python API :mod:`stablenets.api` (``compose``,
``train``, ``evaluate``, ``load_run``, ``load_model``; all but ``train`` also importable from here).
Nothing heavy is imported until one of them is used.
"""

__version__ = "0.1.0"

_API = ("compose", "evaluate", "load_run", "load_model")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
