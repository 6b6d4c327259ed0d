"""Plain ``nn.Module`` models assembled from :mod:`stablenets.nn`.  Each takes ``in_shape`` and ``out_dim``
(supplied by the data module) plus its own hyper-parameters from ``conf/model/*.yaml``."""

from .certified import CertifiedConvNet
from .conv import ConvNonExpansiveNet, ConvResNet
from .dynamics import ContractingField, LyapunovStableField, VectorFieldMLP
from .hnn import HNN
from .invnet import InvNet
from .lipconvnet import LipConvNet
from .mlp import MLP
from .nonexpansive import NonExpansiveNet
from .resnet import ResNet

__all__ = [
    "CertifiedConvNet",
    "ContractingField",
    "LyapunovStableField",
    "VectorFieldMLP",
    "ConvNonExpansiveNet",
    "ConvResNet",
    "HNN",
    "InvNet",
    "LipConvNet",
    "MLP",
    "NonExpansiveNet",
    "ResNet",
]
