"""LightningModules: a task takes a ``net``, an optimizer partial and an optional scheduler partial."""
from .base import Task
from .classification import ClassificationTask
from .inverse import InverseProblemTask

__all__ = ["Task", "ClassificationTask", "InverseProblemTask"]
