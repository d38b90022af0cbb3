"""QuantConv2d: ``nn.Conv2d`` (the ViT patch embedding) with input, weight and output quantizers.

The weight is quantized per output channel (axis 0) by default, like a Linear's rows.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..errors import VitqError
from .base import QuantWeightModule


class QuantConv2d(QuantWeightModule):
    """A Conv2d whose operands are fake-quantized. Build it with :meth:`from_float`."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> "QuantConv2d":
        if conv.padding_mode != "zeros":
            raise VitqError(f"QuantConv2d supports padding_mode='zeros' only, not {conv.padding_mode!r}")
        m = cls()
        m.weight, m.bias = conv.weight, conv.bias  # (out, in/groups, kh, kw)
        m.stride, m.padding, m.dilation, m.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        m.in_channels, m.out_channels, m.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        m._init_quantizers()
        m.input_quantizer.channel_axis = 1  # (B, C, H, W) images: channels on axis 1
        m.output_quantizer.channel_axis = 1
        return m

    def op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
