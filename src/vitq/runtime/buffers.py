"""A module mixin whose named buffers keep their dtype through ``model.to(dtype)``.

``model.to(torch.bfloat16)`` casts every floating-point buffer, float8 codes and float32 scales included. Kernel
modules (Fp8Linear, Int8Linear) must keep their codes and scales exact, so only the device of those buffers follows.
"""
from __future__ import annotations

import torch
from torch import nn


class FixedDtypeBuffers(nn.Module):
    """Buffers named in ``fixed_dtype_buffers`` move with ``.to(device)`` but never change dtype."""

    fixed_dtype_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {k: self._buffers.pop(k) for k in self.fixed_dtype_buffers if self._buffers.get(k) is not None}
        super()._apply(fn, recurse)
        for k, t in kept.items():
            self._buffers[k] = t.to(fn(torch.zeros(1, device=t.device)).device)
        return self
