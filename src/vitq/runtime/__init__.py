"""Real low-precision execution of frozen vitq models in PyTorch (integer GEMMs)."""
from .int8 import Int8Linear, int8_reason, to_int8

__all__ = ["Int8Linear", "int8_reason", "to_int8"]
