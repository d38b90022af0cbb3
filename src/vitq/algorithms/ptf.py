"""Power-of-two factor (PTF) for post-LayerNorm activations, from FQ-ViT (Lin et al., IJCAI 2022).

Post-LayerNorm activations vary widely between channels. PTF gives every channel ``c`` the scale
``s * 2^k_c`` with one shared base scale ``s``, one shared zero point and a small integer ``k_c`` in ``0..K``
(default K = 3): inference keeps a per-tensor integer layout and applies ``k_c`` as a bit shift. ``s`` is the
per-tensor min-max scale divided by ``2^K``; each channel's ``k_c`` minimizes its squared quantization error on
the calibration data. The spec's granularity is per-channel (the scales differ per channel).
"""
from __future__ import annotations

import torch

from ..errors import VitqError
from ..granularity import PerChannel
from ..observers import MSEObserver
from ..primitives import fake_quantize, qparams_from_minmax, qrange


class PowerOfTwoFactorObserver(MSEObserver):
    """Per-channel scales ``s * 2^k`` with a shared base scale and zero point (see module docstring)."""

    def __init__(self, spec, channel_axis=-1, max_factor: int = 3, max_samples: int = 1 << 21, seed: int = 0):
        super().__init__(spec, channel_axis, p=2.0, max_samples=max_samples, seed=seed)
        self.max_factor = int(max_factor)
        if not isinstance(spec.granularity, PerChannel):
            raise VitqError("the ptf observer needs a per-channel spec (one power-of-two factor per channel)")

    def solve(self):
        if not self.has_data:
            raise VitqError("observer has seen no data")
        spec, x = self.spec, self._samples  # x: (C, M)
        signed = self.signed()
        qmin, qmax = qrange(spec.bits, signed)
        top, z = qparams_from_minmax(self.min_val.min(), self.max_val.max(), spec.bits, spec.symmetric, signed)
        base = top / 2 ** self.max_factor
        best_err = torch.full((x.shape[0],), float("inf"))
        best_scale = torch.full((x.shape[0],), float(top))
        for k in range(self.max_factor + 1):
            s = base * 2 ** k
            err = (fake_quantize(x, s.reshape(1, 1), z.reshape(1, 1), qmin, qmax) - x).pow(2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, s, best_scale)
        self._samples = None
        shape = self.min_val.shape
        return best_scale.view(shape), z.expand(shape).clone(), qmin, qmax
