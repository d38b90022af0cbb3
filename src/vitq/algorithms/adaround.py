"""AdaRound (Nagel et al., ICML 2020): learned up/down rounding of a weight on its quantizer's grid.

Each weight gets a variable ``V``; its soft code is ``floor(w/s) + h(V)`` with the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, pushed to 0 or 1 by the regularizer
``sum(1 - |2 h(V) - 1|^beta)`` as beta anneals (:func:`beta_schedule`). :mod:`.reconstruct` trains ``V`` block by
block; the hard decisions (``h(V) >= 0.5``) become the codes ``freeze()`` stores.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..nn.base import QuantWeightModule

GAMMA, ZETA = -0.1, 1.1  # rectified sigmoid stretch (AdaRound)


def beta_schedule(it: int, iters: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0) -> Optional[float]:
    """AdaRound's regularizer exponent at iteration ``it`` of ``iters``: None (no regularizer) during the first
    ``warmup`` fraction, then linear from ``start`` to ``end`` over the remaining iterations."""
    t0 = int(warmup * iters)
    if it < t0:
        return None
    rel = (it - t0) / max(1, iters - 1 - t0)
    return end + (start - end) * max(0.0, 1.0 - rel)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class SoftRound(nn.Module):
    """AdaRound parametrization of one layer's weight on its weight quantizer's grid.

    ``mode``: ``"soft"`` (``h(V)``, differentiable in V), ``"hard"`` (``h(V) >= 0.5``), ``"nearest"``
    (round to nearest, the same codes as ``freeze()`` without reconstruction)."""

    def __init__(self, layer: QuantWeightModule, learn: bool):
        super().__init__()
        q = layer.weight_quantizer
        self.view = lambda t: q.spec.granularity.view(t, q.channel_axis)[0]
        w = layer.weight.detach()
        self.shape = w.shape
        self.scale, self.zero_point = q.scale.detach(), q.zero_point.detach()
        self.qmin, self.qmax = (int(v) for v in q.qrange)
        wv = self.view(w) * (1.0 / self.scale)  # the reciprocal, as primitives.quantize does
        self.register_buffer("base", torch.floor(wv))
        self.register_buffer("nearest_codes", torch.round(wv))
        rest = (wv - self.base).clamp(0.0, 1.0)
        # h(V) = rest  <=>  sigmoid(V) = (rest - gamma) / (zeta - gamma)
        p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
        self.v = nn.Parameter(torch.log(p / (1 - p)), requires_grad=learn)
        self.mode = "soft" if learn else "nearest"

    def codes(self, mode: Optional[str] = None) -> torch.Tensor:
        mode = mode or self.mode
        if mode == "nearest":
            q = self.nearest_codes
        elif mode == "hard":
            q = self.base + (self.v >= 0).to(self.base.dtype)  # h(V) >= 0.5 <=> V >= 0
        else:
            q = self.base + rectified_sigmoid(self.v)
        return torch.clamp(q + self.zero_point, self.qmin, self.qmax)

    def weight(self, mode: Optional[str] = None) -> torch.Tensor:
        """The (fake-quantized) weight in the layer's shape: ``(codes - z) * s``, as ``dequantize`` computes."""
        return ((self.codes(mode) - self.zero_point) * self.scale).reshape(self.shape)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * rectified_sigmoid(self.v) - 1).abs().pow(beta)).sum()

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.weight()
