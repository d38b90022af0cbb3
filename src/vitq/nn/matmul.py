"""QuantMatMul: ``a @ b`` with a quantizer on each operand (the two attention matmuls)."""
from __future__ import annotations

import torch

from ..quantizer import Quantizer
from .base import QuantModule


class QuantMatMul(QuantModule):
    """``a_quantizer(a) @ b_quantizer(b)``. Operand quantizers default to per-tensor over the last axis' channels."""

    def __init__(self):
        super().__init__()
        self.a_quantizer = Quantizer(channel_axis=-1)
        self.b_quantizer = Quantizer(channel_axis=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a_quantizer(a) @ self.b_quantizer(b)
