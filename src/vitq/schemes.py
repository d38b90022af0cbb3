"""Quantization schemes: the one table of value grids and what each can do.

A :class:`QuantSpec`'s ``scheme`` names an entry of :data:`SCHEMES`. The quantizer, the observers, the layers,
ONNX export and the low-precision runtime read the entry's capabilities instead of testing the name, so a new
scheme is one entry here (plus its math in :mod:`vitq.primitives`).

=============== ======= ======== =========== ============ ====== ==================================================
scheme          codes   weights  dynamic     ONNX QDQ     kernel levels
=============== ======= ======== =========== ============ ====== ==================================================
``uniform``     int     yes      yes         yes          int8   affine integer grid (``primitives.fake_quantize``)
``log2``        --      no       no          no           --     ``scale * 2^-c`` and an exact zero
``log_sqrt2``   --      no       no          no           --     ``scale * 2^(-c/2)`` and an exact zero
``twin_uniform`` --     no       no          no           --     two uniform grids ``[s1, s2]`` (PTQ4ViT)
``fp8_e4m3``    float8  yes      no          no           fp8    e4m3 values of ``x / scale`` (8 bits, symmetric)
=============== ======= ======== =========== ============ ====== ==================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import VitqError
from .primitives import (EPS, FP8_DTYPE, FP8_MAX, dequantize, fake_quantize, fake_quantize_fp8, fake_quantize_log,
                         fake_quantize_twin, int_dtype, qparams_from_minmax, qrange, quantize, quantize_fp8)

# (x, scale, zero_point, qmin, qmax, spec) -> fake-quantized x; x is already in the granularity's view
FakeQuantize = Callable[..., torch.Tensor]
# (min, max, spec, signed) -> (scale, zero_point, qmin, qmax)
SolveMinMax = Callable[..., tuple[torch.Tensor, torch.Tensor, int, int]]


@dataclass(frozen=True)
class Scheme:
    """One value grid and its capabilities.

    * ``fake_quantize``: the rounding of a tensor onto the grid (the forward of a quantizer);
    * ``affine``: an affine integer grid (scale, zero point), so clipping-range searches (MSE, percentile,
      Hessian, GPTQ, RepQ's reparameterization) apply to it;
    * ``solve_minmax``: qparams from observed min/max statistics, or None when only a searching observer can
      solve it (twin-uniform: ``observer: twin``);
    * ``codes``: what a frozen weight is stored as (``"int"`` integer codes, ``"float8"``), None when the grid has
      no code a kernel reads;
    * ``weights``: may quantize a weight (log and twin grids are for non-negative activations only);
    * ``dynamic``: may solve its qparams per input at run time (per-token);
    * ``exportable``: ONNX QuantizeLinear/DequantizeLinear express it;
    * ``kernel``: the low-precision GEMM family that runs it (``"int8"``, ``"fp8"``), or None;
    * ``scale_is_max``: the scale is the largest level (log grids hang their levels from it);
    * ``fixed_bits``: the only bit width it has (fp8: 8), else None; ``symmetric_only``: no zero point.
    """

    name: str
    fake_quantize: FakeQuantize
    solve_minmax: Optional[SolveMinMax]
    affine: bool = False
    codes: Optional[str] = None
    weights: bool = False
    dynamic: bool = False
    exportable: bool = False
    kernel: Optional[str] = None
    scale_is_max: bool = False
    fixed_bits: Optional[int] = None
    symmetric_only: bool = False

    def quantize_codes(self, xv: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
        """Codes of ``xv`` (in the granularity's view): integers in xv's float dtype, or float8 values."""
        if self.codes == "int":
            return quantize(xv, scale, zero_point, qmin, qmax)
        if self.codes == "float8":
            return quantize_fp8(xv, scale)
        raise VitqError(f"{self.name} values have no codes a kernel reads")

    def dequantize_codes(self, qv: torch.Tensor, scale, zero_point) -> torch.Tensor:
        """Real values of codes ``qv`` (in the granularity's view)."""
        if self.codes == "int":
            return dequantize(qv, scale, zero_point)
        if self.codes == "float8":
            return qv.float() * scale
        raise VitqError(f"{self.name} values have no codes")

    def code_dtype(self, qmin: int, qmax: int) -> torch.dtype:
        """The storage dtype of frozen codes."""
        if self.codes == "float8":
            return FP8_DTYPE
        return int_dtype(qmin, qmax)

    def check(self, bits: int, symmetric: bool) -> None:
        """Raise when ``bits``/``symmetric`` do not fit this grid."""
        if self.fixed_bits is not None and bits != self.fixed_bits:
            raise VitqError(f"{self.name} is a {self.fixed_bits}-bit format: use bits={self.fixed_bits}")
        if self.symmetric_only and not symmetric:
            raise VitqError(f"{self.name} is symmetric only: use symmetric=True")


def _uniform_fq(x, scale, zero_point, qmin, qmax, spec):
    return fake_quantize(x, scale, zero_point, qmin, qmax)


def _uniform_solve(lo, hi, spec, signed):
    scale, zp = qparams_from_minmax(lo, hi, spec.bits, spec.symmetric, signed)
    return (scale, zp, *qrange(spec.bits, signed))


def _log_fq(x, scale, zero_point, qmin, qmax, spec):
    return fake_quantize_log(x, scale, spec.bits, spec.scheme, spec.strict)


def _log_solve(lo, hi, spec, signed):
    scale = hi.clamp_min(EPS)  # the levels hang from the maximum; no zero point
    return scale, torch.zeros_like(scale), 0, 2 ** spec.bits - 1


def _twin_fq(x, scale, zero_point, qmin, qmax, spec):
    return fake_quantize_twin(x, scale, spec.bits, signed=qmin < 0)


def _fp8_fq(x, scale, zero_point, qmin, qmax, spec):
    return fake_quantize_fp8(x, scale)


def _fp8_solve(lo, hi, spec, signed):
    # symmetric: the largest magnitude maps to e4m3's largest finite value
    scale = (torch.maximum(-lo, hi) / FP8_MAX).clamp_min(EPS)
    return scale, torch.zeros_like(scale), -int(FP8_MAX), int(FP8_MAX)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("uniform", _uniform_fq, _uniform_solve, affine=True, codes="int", weights=True, dynamic=True, exportable=True,
           kernel="int8"),
    Scheme("log2", _log_fq, _log_solve, scale_is_max=True),
    Scheme("log_sqrt2", _log_fq, _log_solve, scale_is_max=True),
    Scheme("twin_uniform", _twin_fq, None),
    Scheme("fp8_e4m3", _fp8_fq, _fp8_solve, codes="float8", weights=True, kernel="fp8", fixed_bits=8,
           symmetric_only=True),
)}


def get_scheme(name: str) -> Scheme:
    """The entry of :data:`SCHEMES` named ``name``, else a VitqError listing the known ones."""
    scheme = SCHEMES.get(name) if isinstance(name, str) else None
    if scheme is None:
        raise VitqError(f"unknown scheme {name!r} (known: {', '.join(SCHEMES)})")
    return scheme
