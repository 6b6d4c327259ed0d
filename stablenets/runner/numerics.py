"""Floating-point mode of a run: flush subnormal numbers to zero (FTZ/DAZ) where the CPU supports it.

Weights that get no gradient (a dead hidden unit of a gradient-flow block, say) shrink geometrically under
weight decay and, after a few thousand steps, reach the subnormal float32 range (below ``2⁻¹²⁶ ≈ 1.2e-38``).
x86 arithmetic on subnormals takes a slow microcode path: the certified Fashion-MNIST preset ran 7× slower
per epoch from about epoch 13 on.  With flush on, such values are zeros — inputs are read as 0 (DAZ) and
results that would be subnormal are written as 0 (FTZ) — and arithmetic keeps its speed.

Certificates keep their meaning: a flushed value *is* a zero, the eval-mode scale of each spectral layer is
checked on the weight the forward pass applies, computed under the same mode (see
``stablenets.nn.spectral``), and every certified norm is enlarged by ``numel · 2⁻¹²⁶`` (see
``stablenets.nn.power``), which covers the difference between a weight and its flushed copy — so a bound
computed with the flag on holds for a forward pass with it off, and the other way round.

The flag is per thread (the x86 MXCSR register).  New threads copy it from the thread that starts them, so
:func:`flush_denormals` must run before torch starts its intra-op threads; it checks every thread of the
pool with a probe and says ``"partial"`` when some were started before it.
"""

from __future__ import annotations

import warnings

import torch

from .errors import ConfigError

#: 2⁻⁷⁰ squared is 2⁻¹⁴⁰: a float32 subnormal (normal floats start at 2⁻¹²⁶), zero when flushed
_PROBE = 2.0**-70


def flushing() -> bool | str:
    """Whether float32 arithmetic flushes subnormals on every intra-op thread: ``True``, ``False`` or
    ``"partial"`` (only some threads: they were started before the flag was set).

    The probe squares ``2⁻⁷⁰`` in a tensor large enough for every thread of the pool to take a share, and
    reads the results' bits (a comparison with 0 would itself read a subnormal as 0)."""
    n = max(1, torch.get_num_threads()) * (1 << 16)
    x = torch.full((n,), _PROBE, dtype=torch.float32)
    nonzero = int(((x * x).view(torch.int32) != 0).sum())
    return True if nonzero == 0 else False if nonzero == n else "partial"


def flush_denormals(enabled: bool = True) -> bool | str:
    """Set the flush-to-zero mode of this process (``torch.set_flush_denormal``) and return what holds now
    (:func:`flushing`; ``False`` on a CPU without the mode).  Call it before any parallel torch work."""
    if not isinstance(enabled, bool):
        raise ConfigError(f"flush_denormal must be true or false, got {enabled!r}")
    supported = torch.set_flush_denormal(enabled)
    state = flushing() if supported else False
    if enabled and state == "partial":
        warnings.warn(
            "flush_denormal: torch's intra-op threads were started before the flag was set; only some "
            "of them flush subnormals to zero (arithmetic on subnormals stays slow there)",
            stacklevel=2,
        )
    return state
