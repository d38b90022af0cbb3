"""Real low-precision execution of frozen vitq models in PyTorch: INT8 (``torch._int_mm``) and FP8
(``torch._scaled_mm``) Linear layers, chosen per layer and per device by :func:`lower`."""
from .eligibility import fp8_reason, int8_reason
from .fp8 import Fp8Linear, Fp8PatchConv
from .int8 import Int8Linear
from .lower import kernel_support, lower, recommended_preset

__all__ = ["Fp8Linear", "Fp8PatchConv", "Int8Linear", "fp8_reason", "int8_reason", "kernel_support", "lower", "recommended_preset"]
