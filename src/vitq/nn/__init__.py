"""vitq's quantized layers: swapped in for their float counterparts by :func:`vitq.convert`."""
from .attention import QuantAttention
from .base import QuantModule, QuantWeightModule
from .conv import QuantConv2d
from .linear import QuantLinear
from .matmul import QuantMatMul

__all__ = ["QuantAttention", "QuantConv2d", "QuantLinear", "QuantMatMul", "QuantModule", "QuantWeightModule"]
