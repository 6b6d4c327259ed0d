"""The runner: config building, launching, sweeps, collection, reporting, progress and provenance.

It turns a composed Hydra config into a run of the science (``stablenets.nn``, ``models``, ``tasks``, ...)
and never the other way round: no module of the science imports this package.  A run, step by step
(:func:`stablenets.train.train`): :mod:`.run_dir` (what is on disk), :mod:`.config` (checks and objects),
:mod:`.fit` (trainer, loggers, callbacks, fit and test; DDP ranks from :mod:`.ddp`), :mod:`.record`
(evaluation, report, ``results.json``).  Around it: :mod:`.search_path` and :mod:`.resolvers` (composing
configs), :mod:`.overrides` and :mod:`.sweeps` (multiruns from the recipes), :mod:`.progress`,
:mod:`.loggers`, :mod:`.reporting`, :mod:`.provenance` and :mod:`.errors`.
"""

from .resolvers import register as _register_resolvers

_register_resolvers()
