"""Fp8Linear: a frozen fp8_e4m3 QuantLinear run as a real FP8 GEMM (``torch._scaled_mm``, FP8 tensor cores).

    y = s_x * s_w[n] * (sum_k fp8(x[k] / s_x) * w8[n, k]) + bias[n]

The input is cast to e4m3 with its frozen, calibrated per-tensor scale (static: no amax reduction at run time,
so under ``torch.compile`` the cast fuses into the op that produces the input, e.g. the LayerNorm or GELU). The
weight codes are the frozen e4m3 codes with one scale per output row (row-wise scaled GEMM) or one per tensor
(tensor-wise scaled GEMM, cuBLASLt's fastest FP8 path); ``_scaled_mm`` applies both scales and the bias in its
epilogue and accumulates in fp32. The result equals the fake-quant layer up to accumulation order.
``_scaled_mm`` also runs on the CPU (slowly), which is the tested fallback; on CUDA it needs compute capability
8.9 or newer (Ada, Hopper).
"""
from __future__ import annotations

import torch
from torch import nn

from ..granularity import PerTensor
from ..nn import QuantConv2d, QuantLinear
from ..primitives import FP8_DTYPE, FP8_MAX
from .buffers import FixedDtypeBuffers
from .eligibility import check_eligible, fp8_reason


class Fp8Linear(FixedDtypeBuffers):
    """A Linear computed on FP8 codes. Build it from a frozen QuantLinear with :meth:`from_quant_linear`.

    ``model.to(torch.bfloat16)`` leaves its codes and scales exact; the output takes the input's dtype.
    """

    fixed_dtype_buffers = ("weight_fp8", "weight_scale", "input_scale_t")

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias, input_scale: float):
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.register_buffer("weight_fp8", weight_fp8.to(FP8_DTYPE).contiguous())  # (out, in), e4m3 codes
        self.register_buffer("weight_scale", weight_scale.reshape(1, -1).float().contiguous())  # (1, out)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.input_scale = float(input_scale)
        # the float32 reciprocal, exactly as the fake quantizer computes it, so both round x / s alike
        self.input_inv_scale = float(1.0 / torch.tensor(self.input_scale, dtype=torch.float32))
        self.register_buffer("input_scale_t", torch.tensor(self.input_scale, device=weight_fp8.device).reshape(1, 1))

    @classmethod
    def from_quant_linear(cls, layer: QuantLinear) -> "Fp8Linear":
        check_eligible(fp8_reason(layer), "Fp8Linear")
        wq = layer.weight_quantizer
        w_scale = wq.scale.reshape(1) if isinstance(wq.spec.granularity, PerTensor) else layer.weight_row_scales()
        return cls(layer.weight_int, w_scale, layer.bias, float(layer.input_quantizer.scale.reshape(())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        a = (x2.float() * self.input_inv_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        # row-wise scaled GEMMs give bf16 on CUDA; the CPU kernel also gives fp32
        out_dtype = torch.bfloat16 if (x.is_cuda or x.dtype == torch.bfloat16) else torch.float32
        bias = None if self.bias is None else self.bias.to(out_dtype)
        if self.weight_scale.numel() == 1:  # per-tensor weight: the tensor-wise scaled GEMM (cuBLASLt)
            scale_a, scale_b = self.input_scale_t.reshape(()), self.weight_scale.reshape(())
        else:  # per-row weight scales: the row-wise scaled GEMM
            scale_a, scale_b = self.input_scale_t.expand(a.shape[0], 1).contiguous(), self.weight_scale
        y = torch._scaled_mm(a, self.weight_fp8.t(), scale_a=scale_a, scale_b=scale_b, bias=bias,
                             out_dtype=out_dtype)  # (M, N)
        return y.to(x.dtype).reshape(*lead, self.out_features)


class Fp8PatchConv(nn.Module):
    """A patch-embedding Conv2d (kernel == stride) run as one FP8 GEMM over the flattened patches.

    (B, C, H, W) -> patches (B * H/kh * W/kw, C * kh * kw) -> Fp8Linear -> (B, out, H/kh, W/kw). The weight
    (out, C, kh, kw) flattens in the same (C, kh, kw) order, so this equals the convolution.
    """

    def __init__(self, linear: Fp8Linear, kernel_size: tuple[int, int]):
        super().__init__()
        self.linear, self.kernel_size = linear, tuple(kernel_size)

    @classmethod
    def from_quant_conv(cls, conv: QuantConv2d) -> "Fp8PatchConv":
        check_eligible(fp8_reason(conv), "Fp8PatchConv")
        codes = conv.weight_int.reshape(conv.weight_int.shape[0], -1)  # (out, C * kh * kw)
        linear = Fp8Linear(codes, conv.weight_row_scales(), conv.bias, float(conv.input_quantizer.scale.reshape(())))
        return cls(linear, conv.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        kh, kw = self.kernel_size
        patches = x.reshape(B, C, H // kh, kh, W // kw, kw).permute(0, 2, 4, 1, 3, 5)  # (B, Hp, Wp, C, kh, kw)
        y = self.linear(patches.reshape(B, H // kh, W // kw, C * kh * kw))  # (B, Hp, Wp, out)
        return y.permute(0, 3, 1, 2)  # (B, out, Hp, Wp)
