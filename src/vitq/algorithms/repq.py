"""Scale reparameterization of post-LayerNorm activations, from RepQ-ViT (Li et al., ICCV 2023).

Post-LayerNorm activations need per-channel scales, which integer kernels cannot use. RepQ-ViT calibrates them per
channel anyway (scales ``s[c]``, zero points ``z[c]``), then picks one per-tensor pair ``s~ = mean(s)``,
``z~ = mean(z)`` and rewrites the LayerNorm so each channel lands on that shared grid:

    r = s / s~        b = min / r - min~      with min = -z * s, min~ = -z~ * s~

folded into the LayerNorm affine and the next Linear's weight and bias (:func:`.fold.fold_channel_affine`).
The next Linear's weights are calibrated afterwards, on their rescaled values (they are frozen after this step).

``round_zero_point=True`` (vitq's strict default) rounds ``z~`` to an integer. Then, since ``x~ / s~ = x / s[c] +
z[c] - z~`` with integers ``z[c] - z~``, quantizing the new activation per tensor gives exactly the per-channel
codes of the old one, on ``2^b`` levels. RepQ-ViT's code leaves the mean unrounded (``round_zero_point=False``):
the rounding then shifts by the fractional part, and the clipped ends fall off the integer grid (up to
``2^b + 1`` distinct values).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..errors import VitqError
from ..granularity import PerChannel, PerTensor
from ..observers import make_observer
from .fold import feed_inputs, fold_channel_affine, norm_linear_pairs


def apply(model: nn.Module, batches: Sequence[torch.Tensor], round_zero_point: bool = True) -> None:
    """Calibrate each post-LayerNorm input per channel, fold the rescaling, fix the per-tensor qparams."""
    targets = []
    for name, norm, linears in norm_linear_pairs(model):
        iq = linears[0].input_quantizer
        if not iq.enabled or iq.has_qparams or not iq.scheme.affine:
            continue
        if not isinstance(iq.spec.granularity, PerTensor):
            raise VitqError(f"repq: {name} feeds a {iq.spec.granularity.kind} input quantizer; the "
                            "reparameterization produces a per-tensor one")
        observer = make_observer(replace(iq.spec, granularity=PerChannel()), channel_axis=-1)
        targets.append((norm, linears, iq, observer))
    if not targets:
        raise VitqError("repq found no LayerNorm -> Linear pair with a per-tensor input quantizer to reparameterize")
    feed_inputs(model, [t[1][0] for t in targets], batches, lambda i, x: targets[i][3].update(x))
    for norm, linears, iq, observer in targets:
        scale, zero_point, qmin, qmax = observer.solve()
        s, z = scale.reshape(-1), zero_point.reshape(-1)  # (C,)
        s_t, z_t = s.mean(), z.mean()
        if round_zero_point:
            z_t = z_t.round()
        r = s / s_t
        b = (-z * s) / r - (-z_t * s_t)
        fold_channel_affine(norm, linears, r, b)
        iq.set_qparams(s_t, z_t, qmin, qmax)
