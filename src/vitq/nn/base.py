"""QuantModule: the base of every vitq layer, and the weight-holding base of QuantLinear and QuantConv2d.

The one rule it enforces is finding 2 of the design notes, *never quantize a weight twice*: ``freeze()`` quantizes
the float weight exactly once, stores the integer codes (``weight_int``, a persistent buffer) and replaces
``weight`` by its dequantized copy (a non-persistent buffer rebuilt from the codes on load). Forward always reads
``self.weight``; nothing ever rounds it again. A second ``freeze()`` raises.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import VitqError
from ..granularity import PerBlock, PerChannel, PerTensor
from ..quantizer import Quantizer


class QuantModule(nn.Module):
    """Base of vitq layers: owns :class:`Quantizer` children and freezes them once."""

    is_frozen: bool = False

    def own_quantizers(self) -> list[tuple[str, Quantizer]]:
        """The quantizers that belong to this module itself (not to quant submodules)."""
        return [(n, m) for n, m in self.named_children() if isinstance(m, Quantizer)]

    def freeze(self) -> None:
        """Fix the qparams of this module's own activation quantizers (weights: see QuantWeightModule)."""
        if self.is_frozen:
            raise VitqError(f"{type(self).__name__} is already frozen: a model is frozen exactly once")
        for name, q in self.own_quantizers():
            if q.is_weight:
                continue
            try:
                if not q.has_qparams:  # else fixed by a calibration algorithm (Quantizer.set_qparams)
                    q.solve()
                q.enable()
            except VitqError as e:
                raise VitqError(f"{name}: {e}") from None
        self.is_frozen = True

    def prepare_frozen_layout(self) -> None:
        """Give this (converted, unfrozen) module the buffer layout of a frozen one, before loading a state dict."""
        self.is_frozen = True

    def finish_load(self) -> None:
        """Rebuild derived state after a frozen state dict was loaded."""


class QuantWeightModule(QuantModule):
    """A layer with one weight: input, weight and output quantizers; the weight is frozen to integers once."""

    def _init_quantizers(self) -> None:
        self.input_quantizer = Quantizer(channel_axis=-1)
        self.weight_quantizer = Quantizer(channel_axis=0, is_weight=True)
        self.output_quantizer = Quantizer(channel_axis=-1)

    @property
    def weight_is_quantized(self) -> bool:
        return "weight_int" in self._buffers

    def freeze(self) -> None:
        super().freeze()
        wq = self.weight_quantizer
        if not wq.enabled:
            return
        w = self.weight.detach()
        self.fix_weight_grid()
        wq.enable()
        codes = wq.quantize_int(w)
        qmin, qmax = (int(v) for v in wq.qrange)
        del self.weight  # the float Parameter goes; only codes + scale remain
        self.register_buffer("weight_int", codes.to(wq.scheme.code_dtype(qmin, qmax)))
        self.finish_load()

    def fix_weight_grid(self) -> None:
        """Fix the weight quantizer's qparams from the current float weight (its spec's observer), unless a
        calibration algorithm already fixed them (a search, a reparameterization). Rounding algorithms (GPTQ,
        AdaRound) call this to learn on the grid ``freeze()`` will use."""
        wq = self.weight_quantizer
        if wq.enabled and not wq.has_qparams:
            wq.observe_tensor(self.weight.detach())
            wq.solve()

    def weight_row_scales(self) -> torch.Tensor:
        """(out,) scale of each output row of the frozen integer weight, as integer kernels take it.

        Per-tensor and per-block scales are repeated over their rows. Raises VitqError when the weight is not
        quantized, not symmetric, or its scales do not follow output rows (per-group, other axes).
        """
        wq = self.weight_quantizer
        if not self.weight_is_quantized:
            raise VitqError("the weight is not quantized")
        if not wq.spec.symmetric:
            raise VitqError("asymmetric weights have no standard INT8 kernel; use symmetric weights")
        g = wq.spec.granularity
        if not isinstance(g, (PerTensor, PerChannel, PerBlock)) or getattr(g, "axis", None) not in (None, 0):
            raise VitqError(f"{g.kind} weight scales are not per output row; integer kernels need per-tensor, "
                            "per-channel (axis 0) or per-block rows")
        rows = self.weight_int.shape[0]
        scale = wq.scale.reshape(-1)
        return scale.repeat_interleave(rows // scale.numel()) if scale.numel() != rows else scale

    def prepare_frozen_layout(self) -> None:
        super().prepare_frozen_layout()
        if self.weight_quantizer.enabled:
            del self.weight
            self.register_buffer("weight_int", torch.empty(0, dtype=torch.int8))  # dtype and shape come from the file

    def finish_load(self) -> None:
        if self.weight_is_quantized:
            # Dequantized once from the stored codes; forward reads it, never re-rounds it.
            self.register_buffer("weight", self.weight_quantizer.dequantize_int(self.weight_int.float()),
                                 persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight_int"
        if key in state_dict and "weight_int" in self._buffers:
            self._buffers["weight_int"] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self.op(self.input_quantizer(x), self.weight, self.bias))

    def op(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        """The float operation (F.linear, F.conv2d) on already-quantized operands."""
        raise NotImplementedError
