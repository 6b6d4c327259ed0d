from .certify import certified_accuracy, certified_radius, margins
from .curve import autoattack_l2, robustness_curve
from .lipschitz import empirical_lipschitz, jacobian_norm_search
from .pgd import PGDResult, attack_loss, pgd_l2, pgd_l2_per_eps

__all__ = [
    "certified_accuracy",
    "certified_radius",
    "margins",
    "autoattack_l2",
    "robustness_curve",
    "PGDResult",
    "attack_loss",
    "pgd_l2",
    "pgd_l2_per_eps",
    "empirical_lipschitz",
    "jacobian_norm_search",
]
