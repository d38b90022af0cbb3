"""Real low-precision execution of frozen vitq models in PyTorch: INT8 (``torch._int_mm``) and FP8
(``torch._scaled_mm``) Linear layers, chosen per layer and per device by :func:`lower`."""
from .fp8 import Fp8Linear, Fp8PatchConv, fp8_reason
from .int8 import Int8Linear, int8_reason, to_int8
from .lower import kernel_support, lower, recommended_preset

__all__ = ["Fp8Linear", "Fp8PatchConv", "Int8Linear", "fp8_reason", "int8_reason", "kernel_support", "lower", "recommended_preset",
           "to_int8"]
