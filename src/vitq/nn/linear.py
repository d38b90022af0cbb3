"""QuantLinear: ``nn.Linear`` with input, weight and (optional) output quantizers.

Forward is exactly ``output_q(F.linear(input_q(x), w_hat, bias))`` where ``w_hat`` is the weight dequantized once
at freeze (see :mod:`vitq.nn.base`). The bias stays float, as integer kernels add it in int32 at ``s_x * s_w``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import QuantWeightModule


class QuantLinear(QuantWeightModule):
    """A Linear layer whose operands are fake-quantized. Build it with :meth:`from_float`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))  # (out, in)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_quantizers()

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "QuantLinear":
        """Wrap ``linear``'s own parameters (no copy: convert() already works on a copy of the model)."""
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        m.weight, m.bias = linear.weight, linear.bias
        return m

    def op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
