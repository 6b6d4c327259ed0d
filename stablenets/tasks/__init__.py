"""LightningModules: a task takes a ``net``, an optimizer partial and an optional scheduler partial."""

from .base import Task
from .classification import ClassificationTask
from .dynamics import DynamicsTask
from .inverse import InverseProblemTask

__all__ = ["DynamicsTask", "Task", "ClassificationTask", "InverseProblemTask"]
