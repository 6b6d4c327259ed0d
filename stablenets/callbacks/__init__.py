from .budget import TimeBudget
from .certified_val import CertifiedValidation
from .checkpoint import LastCheckpoint
from .jacobian_norm import JacobianNormCallback, jacobian_norms
from .power_method import PowerMethodCallback, tracked_modules

__all__ = [
    "CertifiedValidation",
    "TimeBudget",
    "LastCheckpoint",
    "JacobianNormCallback",
    "jacobian_norms",
    "PowerMethodCallback",
    "tracked_modules",
]
