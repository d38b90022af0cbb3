"""Which frozen layers each low-precision kernel can run, with the reason when it cannot.

The kernel modules (:class:`~vitq.runtime.int8.Int8Linear`, :class:`~vitq.runtime.fp8.Fp8Linear`) refuse an
ineligible layer with :func:`check_eligible`; :func:`vitq.runtime.lower` keeps it in fake quantization and records
the reason. A quantizer's grid says which kernel family can read it (``Scheme.kernel`` in :mod:`vitq.schemes`).
"""
from __future__ import annotations

from ..errors import VitqError
from ..granularity import PerTensor
from ..nn import QuantConv2d, QuantLinear


def int8_reason(layer: QuantLinear) -> str | None:
    """Why ``layer`` cannot run as Int8Linear (None when it can)."""
    iq, wq, oq = layer.input_quantizer, layer.weight_quantizer, layer.output_quantizer
    if not iq.has_qparams or iq.spec.bits != 8 or not isinstance(iq.spec.granularity, PerTensor) \
            or iq.scheme.kernel != "int8":
        return "its input is not 8-bit per-tensor quantized"
    if not layer.weight_is_quantized or wq.spec.bits > 8 or wq.scheme.kernel != "int8":
        return "its weight is not int8 or narrower"
    try:
        layer.weight_row_scales()
    except VitqError as e:
        return str(e)
    if oq.enabled:
        return "its output is quantized"
    return None


def fp8_reason(layer: QuantLinear | QuantConv2d) -> str | None:
    """Why ``layer`` cannot run as Fp8Linear / Fp8PatchConv (None when it can)."""
    iq, wq = layer.input_quantizer, layer.weight_quantizer
    if isinstance(layer, QuantConv2d):
        if layer.kernel_size != layer.stride or layer.padding not in ((0, 0), 0, "valid") or \
                layer.dilation != (1, 1) or layer.groups != 1:
            return "only a patch-embedding convolution (kernel == stride, no padding, groups 1) is a plain GEMM"
    if not (iq.has_qparams and iq.scheme.kernel == "fp8" and isinstance(iq.spec.granularity, PerTensor)):
        return "its input is not fp8_e4m3 per-tensor quantized"
    if not (layer.weight_is_quantized and wq.scheme.kernel == "fp8"):
        return "its weight is not fp8_e4m3"
    if layer.output_quantizer.enabled:
        return "its output is quantized"
    k, n = layer.weight_int[0].numel(), layer.weight_int.shape[0]
    if k % 16 or n % 16:
        return f"FP8 GEMMs need dimensions divisible by 16 (this one is {k}x{n})"
    try:
        layer.weight_row_scales()
    except VitqError as e:
        return str(e)
    return None


def check_eligible(reason: str | None, kernel: str) -> None:
    """Raise a VitqError naming ``kernel`` and ``reason`` when a layer cannot run on it (``reason`` not None)."""
    if reason is not None:
        raise VitqError(f"cannot run as {kernel}: {reason}")
