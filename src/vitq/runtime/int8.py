"""Int8Linear: a frozen QuantLinear run as a real integer GEMM (``torch._int_mm``: int8 x int8 -> int32).

    y = s_x * s_w[n] * (sum_k (q_x[k] - z_x) * q_w[n, k]) + bias[n]
      = s_x * s_w[n] * (q_x . q_w[n] - z_x * sum_k q_w[n, k]) + bias[n]

The activation is quantized with its frozen per-tensor scale and zero point (uint8 codes are shifted by -128 into
int8, and the zero point with them), the weight codes are the frozen int8 codes, the zero-point correction uses
precomputed weight row sums, and the int32 accumulator is rescaled once. The integer part is exact; the result
equals the fake-quant layer up to float32 rounding of the rescale. ``torch._int_mm`` runs on CUDA and on the CPU,
so the same module is the GPU path and its CPU fallback (on CUDA it needs more than 16 rows, which are padded).
"""
from __future__ import annotations

import torch

from ..nn import QuantLinear
from ..primitives import quantize
from .buffers import FixedDtypeBuffers
from .eligibility import check_eligible, int8_reason


class Int8Linear(FixedDtypeBuffers):
    """A Linear computed in integers. Build it from a frozen QuantLinear with :meth:`from_quant_linear`.

    ``model.to(torch.bfloat16)`` leaves its codes and scales exact; the output takes the input's dtype.
    """

    fixed_dtype_buffers = ("weight_t", "weight_rowsum", "weight_scale", "input_scale_t", "input_zero_point_t")

    def __init__(self, weight_int: torch.Tensor, weight_scale: torch.Tensor, bias, input_scale: float,
                 input_zero_point: int, input_qmin: int, input_qmax: int):
        super().__init__()
        self.out_features, self.in_features = weight_int.shape
        self.register_buffer("weight_t", weight_int.to(torch.int8).t().contiguous())  # (in, out)
        self.register_buffer("weight_rowsum", weight_int.to(torch.int32).sum(1))  # (out,)
        self.register_buffer("weight_scale", weight_scale.reshape(-1).float())  # (out,)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.input_scale, self.qmin, self.qmax = float(input_scale), int(input_qmin), int(input_qmax)
        self.shift = 128 if self.qmin == 0 else 0  # uint8 codes -> int8
        self.input_zero_point = int(input_zero_point)
        # the same qparams as 0-d tensors for quantize(), built once (they follow .to(device))
        dev = weight_int.device
        self.register_buffer("input_scale_t", torch.tensor(self.input_scale, device=dev))
        self.register_buffer("input_zero_point_t", torch.tensor(float(self.input_zero_point), device=dev))

    @classmethod
    def from_quant_linear(cls, layer: QuantLinear) -> "Int8Linear":
        check_eligible(int8_reason(layer), "Int8Linear")
        iq = layer.input_quantizer
        qmin, qmax = (int(v) for v in iq.qrange)
        return cls(layer.weight_int, layer.weight_row_scales(), layer.bias, float(iq.scale.reshape(())), int(iq.zero_point.reshape(())),
                   qmin, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()  # (M, K)
        codes = quantize(x2, self.input_scale_t, self.input_zero_point_t, self.qmin, self.qmax)
        a = (codes - self.shift).to(torch.int8)
        m = a.shape[0]
        if a.is_cuda and m <= 16:  # the CUDA kernel needs more than 16 rows
            a = torch.cat([a, a.new_zeros(17 - m, a.shape[1])])
        acc = torch._int_mm(a, self.weight_t)[:m]  # (M, N) int32, exact
        acc = acc - (self.input_zero_point - self.shift) * self.weight_rowsum
        y = acc.float() * (self.input_scale * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)
