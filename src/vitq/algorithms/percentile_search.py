"""Percentile-candidate scale search, as RepQ-ViT (Li et al., ICCV 2023) calibrates every quantizer.

For each group (tensor, channel or row), the candidate ranges are the ``(1 - p, p)`` quantiles of the calibration
values for ``p`` in ``percentiles`` (default 0.999, 0.9999, 0.99999); the candidate with the smallest squared
quantization error wins. For the log2 / log-sqrt2 schemes the candidates are the ``p`` quantiles used as the
top level. The search runs on a seeded subsample (see :class:`vitq.observers.MSEObserver`), all groups at once.
"""
from __future__ import annotations

import torch

from ..errors import VitqError
from ..observers import MSEObserver
from ..schemes import get_scheme
from ..primitives import fake_quantize, fake_quantize_log, qparams_from_minmax, qrange


class PercentileSearchObserver(MSEObserver):
    """Pick, per group, the percentile clipping range with the least squared error."""

    def __init__(self, spec, channel_axis=-1, percentiles=(0.999, 0.9999, 0.99999), max_samples: int = 1 << 21,
                 seed: int = 0):
        super().__init__(spec, channel_axis, p=2.0, max_samples=max_samples, seed=seed)
        self.percentiles = tuple(float(p) for p in percentiles)
        if not self.percentiles or not all(0.5 < p <= 1.0 for p in self.percentiles):
            raise VitqError(f"percentiles must lie in (0.5, 1], got {percentiles}")

    def solve(self):
        if not self.has_data:
            raise VitqError("observer has seen no data")
        spec, x = self.spec, self._samples  # x: (R, M)
        shape = self.min_val.shape
        scheme = get_scheme(spec.scheme)
        log = scheme.scale_is_max  # candidates are the top level, not a clipping range
        if not (scheme.affine or log):
            raise VitqError(f"pct_search does not search {spec.scheme} scales")
        signed = False if log else self.signed()
        qmin, qmax = (0, 2 ** spec.bits - 1) if log else qrange(spec.bits, signed)
        best_err = torch.full((x.shape[0],), float("inf"))
        best_scale = best_zp = None
        for p in self.percentiles:
            hi = torch.quantile(x, p, dim=1)
            if log:
                s, z = hi.clamp_min(torch.finfo(torch.float32).eps), torch.zeros_like(hi)
                xq = fake_quantize_log(x, s[:, None], spec.bits, spec.scheme, spec.strict)
            else:
                lo = torch.quantile(x, 1.0 - p, dim=1)
                s, z = qparams_from_minmax(lo, hi, spec.bits, spec.symmetric, signed)
                xq = fake_quantize(x, s[:, None], z[:, None], qmin, qmax)
            err = (xq - x).pow(2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = s if best_scale is None else torch.where(better, s, best_scale)
            best_zp = z if best_zp is None else torch.where(better, z, best_zp)
        self._samples = None
        return best_scale.view(shape), best_zp.view(shape), qmin, qmax
