"""Mixer: a float copy of a quantized model in which chosen quant layers run quantized and the rest float.

The mixer holds ``convert(float_model, config)``, an unfrozen copy whose quantizers are off and whose weights are
float; its attention takes the explicit (non-SDPA) path so that every quantizer point, the softmax output
included, is visible, which makes it equal to the float model up to float32 rounding. It copies the frozen qparams of every quantizer from the quantized
model into it (still off) and keeps each layer's dequantized weight beside its float one. ``quantized(names)``
then switches exactly the named layers to their quantized form (weights and the layers' own activation
quantizers), which is what per-layer sensitivity, block ablation and local-error measurements need.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from ..convert import convert, named_quantizers, quant_modules
from ..nn import QuantAttention, QuantWeightModule


class Mixer:
    """Float/quantized hybrid of ``float_model`` and its frozen ``qmodel`` (same recipe)."""

    def __init__(self, float_model: nn.Module, qmodel: nn.Module):
        self.model = convert(float_model, qmodel.vitq_config)
        frozen = dict(named_quantizers(qmodel))
        for name, q in named_quantizers(self.model):
            src = frozen.get(name)
            if src is not None and src.has_qparams:
                q.load_state_dict(src.state_dict())
                q.disable()
        self.modules = dict(quant_modules(self.model))
        for m in self.modules.values():
            if isinstance(m, QuantAttention):
                m.fused_attn = False  # the explicit path, so the softmax output is seen even when all is float
        qmods = dict(quant_modules(qmodel))
        self._weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, m in self.modules.items():
            if isinstance(m, QuantWeightModule) and qmods[name].weight_is_quantized:
                self._weights[name] = (m.weight.data, qmods[name].weight.detach())
        self.model.eval()

    def weight_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Layer name -> (float weight, dequantized weight) for every layer whose weight is quantized."""
        return dict(self._weights)

    def layer_names(self) -> list[str]:
        """Names of the quant modules that own at least one enabled quantizer."""
        return [n for n, m in self.modules.items() if any(q.enabled for _, q in m.own_quantizers())]

    def set(self, name: str, quantized: bool) -> None:
        """Switch one layer (its weight and its own quantizers) to quantized or float."""
        m = self.modules[name]
        for _, q in m.own_quantizers():
            if q.has_qparams and not q.is_weight:
                q.enable() if quantized else q.disable()
        if name in self._weights:
            fw, qw = self._weights[name]
            m.weight.data = qw if quantized else fw

    @contextmanager
    def quantized(self, names: Iterable[str]) -> Iterator[nn.Module]:
        """Inside the block, exactly ``names`` run quantized."""
        names = list(names)
        for n in names:
            self.set(n, True)
        try:
            yield self.model
        finally:
            for n in names:
                self.set(n, False)
