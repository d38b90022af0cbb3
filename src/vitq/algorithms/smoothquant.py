"""SmoothQuant (Xiao et al., ICML 2023): migrate activation outliers into the next Linear's weights.

For a LayerNorm feeding Linear layers, per input channel ``j``::

    s[j] = max|X[:, j]|^alpha / max|W[:, j]|^(1 - alpha)

(the weight maximum over every Linear fed), then the LayerNorm output is divided by ``s`` and the weights'
columns multiplied by it (:func:`.fold.fold_channel_affine` with ``b = 0``). ``alpha = 0.5`` balances the two
ranges; a larger alpha moves more of the difficulty onto the weights. The calibration pass that follows sees the
smoothed activations.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import VitqError
from .fold import feed_inputs, fold_channel_affine, norm_linear_pairs

MIN_SCALE = 1e-5


ARG_LIMITS = {"alpha": (0.0, 1.0)}


def apply(model: nn.Module, batches: Sequence[torch.Tensor], alpha: float = 0.5) -> None:
    """Smooth every LayerNorm -> Linear pair of ``model`` with migration strength ``alpha``."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise VitqError(f"smoothquant alpha must be in [0, 1], got {alpha}")
    pairs = norm_linear_pairs(model)
    if not pairs:
        raise VitqError("smoothquant found no LayerNorm -> Linear pair to smooth")
    amax = [None] * len(pairs)

    def track(i, x):
        m = x.abs().reshape(-1, x.shape[-1]).amax(0)  # (C,)
        amax[i] = m if amax[i] is None else torch.maximum(amax[i], m)

    feed_inputs(model, [p[2][0] for p in pairs], batches, track)
    for (_, norm, linears), a_x in zip(pairs, amax):
        a_w = torch.stack([lin.weight.detach().abs().amax(0) for lin in linears]).amax(0)  # (C,)
        s = (a_x.clamp_min(MIN_SCALE) ** alpha / a_w.clamp_min(MIN_SCALE) ** (1 - alpha)).clamp_min(MIN_SCALE)
        fold_channel_affine(norm, linears, s, torch.zeros_like(s))
