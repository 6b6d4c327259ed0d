"""LightningDataModules; each exposes ``in_shape`` and ``out_dim`` for the model."""

from .base import TensorBatches, TensorDataModule, epoch_order
from .dynamics import DynamicsDataModule
from .images import ImageDataModule
from .inverse import InverseProblemDataModule
from .swiss_roll import SwissRollDataModule

__all__ = [
    "DynamicsDataModule",
    "TensorBatches",
    "TensorDataModule",
    "epoch_order",
    "ImageDataModule",
    "InverseProblemDataModule",
    "SwissRollDataModule",
]
