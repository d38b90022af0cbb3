"""Pure tensor functions of uniform affine quantization. Modules call these; none re-implements them.

Conventions (the same as ``torch.ao``): ``q = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)`` and
``x_hat = (q - zero_point) * scale``. ``round`` is round-half-to-even. Integer values are carried in float tensors
inside the math (exact for |q| < 2**24) and converted to an integer dtype only for storage.

* symmetric, signed:   qmin = -2**(b-1), qmax = 2**(b-1) - 1, zero_point = 0, scale = max|x| / qmax
* symmetric, unsigned: qmin = 0, qmax = 2**b - 1, zero_point = 0, scale = max(x) / qmax (for x >= 0)
* asymmetric:          qmin = 0, qmax = 2**b - 1, scale = (max - min) / (2**b - 1), zero_point = round(-min / scale)
  (the range is widened to contain 0 so that 0 is exact, as zero padding and ReLU/GELU zeros need)
"""
from __future__ import annotations

import torch

from .errors import VitqError

MIN_BITS, MAX_BITS = 2, 8
# Smallest scale: an all-zero (or constant-zero) group gets this instead of 0, so x / scale never divides by zero.
EPS = torch.finfo(torch.float32).eps


def check_bits(bits: int) -> int:
    """``bits`` as an int in [2, 8], else a VitqError."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise VitqError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer range (qmin, qmax) of a ``bits``-bit signed or unsigned code."""
    check_bits(bits)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def qparams_from_minmax(min_val: torch.Tensor, max_val: torch.Tensor, bits: int, symmetric: bool,
                        signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (float tensors, same shape as ``min_val``) covering [min_val, max_val].

    Raises VitqError on NaN or infinite statistics instead of returning a NaN scale.
    """
    if not (torch.isfinite(min_val).all() and torch.isfinite(max_val).all()):
        raise VitqError("cannot compute a scale from NaN or infinite statistics")
    qmin, qmax = qrange(bits, signed)
    min_val = torch.minimum(min_val, torch.zeros_like(min_val))
    max_val = torch.maximum(max_val, torch.zeros_like(max_val))
    if symmetric:
        if signed:
            scale = torch.maximum(-min_val, max_val) / qmax
        else:
            scale = max_val / qmax
        scale = scale.clamp_min(EPS)
        zero_point = torch.zeros_like(scale)
    else:
        scale = ((max_val - min_val) / (qmax - qmin)).clamp_min(EPS)
        zero_point = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes of ``x`` (in x's float dtype): ``clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)``.

    Multiplying by the float32 reciprocal (rather than dividing) is what PyTorch's fused fake-quant kernels do, so
    this function, :func:`fake_quantize` and those kernels agree bit for bit.
    """
    return torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Real values of integer codes ``q``: ``(q - zero_point) * scale``."""
    return (q.to(scale.dtype) - zero_point) * scale


class _FakeQuantize(torch.autograd.Function):
    """Quantize-dequantize with a straight-through gradient (passed where x was inside the clipping range)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x * (1.0 / scale)) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                  qmax: int) -> torch.Tensor:
    """``dequantize(quantize(x))`` in one step, differentiable w.r.t. x by the straight-through estimator.

    Equal to ``dequantize(quantize(x, ...), ...)`` and to PyTorch's ``fake_quantize_per_*_affine`` kernels.
    Without autograd it runs as four in-place passes, folding the zero point into the clamp bounds:
    ``clamp(round(x / s), qmin - z, qmax - z) * s``, exact because every intermediate is an integer-valued float.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _FakeQuantize.apply(x, scale, zero_point, qmin, qmax)
    if scale.numel() == 1:  # per-tensor: scalar bounds take the fast clamp kernel
        zp = float(zero_point)
        y = x * float(1.0 / scale)  # the float32 reciprocal, as a Python scalar: same value, faster kernel
        y.round_()
        y.clamp_(qmin - zp, qmax - zp)
        return y.mul_(float(scale))
    y = x * (1.0 / scale)
    y.round_()
    y.clamp_(qmin - zero_point, qmax - zero_point)
    return y.mul_(scale)


def fake_quantize_learnable(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                            qmax: int) -> torch.Tensor:
    """Fake quantization differentiable w.r.t. ``scale`` as well as ``x`` (LSQ, Esser et al., ICLR 2020): rounding
    passes the gradient straight through, clamping stops it outside the range, and the scale receives
    ``d/ds [s * (clamp(round(x/s) + z) - z)]``. Same values as :func:`fake_quantize`."""
    v = x / scale
    v = v + (torch.round(v) - v).detach()  # round with a straight-through gradient
    return (torch.clamp(v + zero_point, qmin, qmax) - zero_point) * scale


LOG_STEPS = {"log2": 1.0, "log_sqrt2": 0.5}  # exponent step: levels scale * 2^(-step * code)


def fake_quantize_log(x: torch.Tensor, scale: torch.Tensor, bits: int, scheme: str = "log2",
                      strict: bool = True) -> torch.Tensor:
    """Logarithmic fake quantization of non-negative values (post-softmax probabilities) in [0, scale].

    Levels are ``scale * 2^(-step * c)`` for codes ``c = 0 .. 2^bits - 2`` (step 1 for ``log2``, 1/2 for
    ``log_sqrt2``, as in RepQ-ViT), and code ``2^bits - 1`` is an exact zero: ``2^bits`` levels in all, never more.
    ``strict=False`` keeps all ``2^bits`` power codes and adds the zero on top (``2^bits + 1`` levels), which is
    what RepQ-ViT's code does. A value rounds (in the log domain) to the nearest level, and to zero below half a
    step under the smallest one. Negative inputs clamp to zero. No straight-through gradient: for inference.
    """
    step = LOG_STEPS[scheme]
    top = 2 ** bits - (2 if strict else 1)  # largest power code
    ratio = (x / scale).clamp(0.0, 1.0)
    code = torch.round(-torch.log2(ratio) / step)  # inf for ratio 0
    out = scale * torch.exp2(-step * code.clamp(max=top))
    return torch.where(code > top + 0.5, torch.zeros_like(out), out)


def fake_quantize_twin(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Twin-uniform fake quantization (PTQ4ViT, see :mod:`vitq.algorithms.twin_uniform`); ``scale`` holds ``[s1, s2]``.

    Unsigned (post-softmax): values below ``(2^(b-1) - 1/2) * s1`` take the fine grid ``s1``, the rest ``s2``.
    Signed (post-GELU): negative values take ``s1``, non-negative ones ``s2``. At most ``2^b`` levels either way.
    """
    top = 2 ** (bits - 1) - 1
    s1, s2 = scale[0], scale[1]
    if signed:
        fine = -torch.round(-x * (1.0 / s1)).clamp(0, top) * s1
        coarse = torch.round(x * (1.0 / s2)).clamp(0, top) * s2
        return torch.where(x < 0, fine, coarse)
    q1 = torch.round(x * (1.0 / s1)).clamp_min(0)
    coarse = torch.round(x * (1.0 / s2)).clamp(0, top) * s2
    return torch.where(q1 <= top, q1 * s1, coarse)


FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448: the largest finite e4m3 value


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FP8 (e4m3) codes of ``x / scale``, saturated to +-448: the codes an FP8 GEMM (``torch._scaled_mm``) reads."""
    return (x * (1.0 / scale)).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def fake_quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``dequantize(quantize_fp8(x))``: round to the nearest e4m3 value of ``x / scale`` (saturating), times scale.

    Unlike the integer grid, e4m3 levels are denser near zero (3 mantissa bits per binade): 253 finite values.
    """
    return quantize_fp8(x, scale).to(x.dtype) * scale


def int_dtype(qmin: int, qmax: int) -> torch.dtype:
    """The smallest integer dtype that stores codes in [qmin, qmax]: int8 or uint8 (int16 otherwise)."""
    if qmin >= -128 and qmax <= 127:
        return torch.int8
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    return torch.int16


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum(ref^2) / sum((ref - approx)^2)); inf when equal."""
    noise = (reference.double() - approx.double()).pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(signal / noise))
