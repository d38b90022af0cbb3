"""Twin-uniform quantization of softmax and GELU outputs, from PTQ4ViT (Yuan et al., ECCV 2022).

A ``b``-bit code spends one bit on choosing one of two uniform ranges of ``2^(b-1)`` levels each, with scales
``s1 < s2`` and ``s2 = 2^m * s1`` (so a shift converts between them):

* unsigned (post-softmax): values below ``(2^(b-1) - 1/2) * s1`` use the fine grid ``s1``, the rest ``s2``: small
  probabilities keep resolution while the large ones near 1 stay representable;
* signed (post-GELU): negative values use ``s1`` (GELU's negative part is tiny, down to -0.17), non-negative values
  use ``s2``.

Either way at most ``2^b`` distinct levels. The observer searches ``s2`` over clipping ratios of the maximum and
``m`` over shifts, minimizing the squared error (PTQ4ViT weights it with the Hessian; here plain MSE).
"""
from __future__ import annotations

import torch

from ..errors import VitqError
from ..granularity import PerTensor
from ..observers import MSEObserver
from ..primitives import fake_quantize_twin


class TwinUniformObserver(MSEObserver):
    """Search ``[s1, s2]`` of a per-tensor twin-uniform quantizer (see module docstring)."""

    def __init__(self, spec, channel_axis=-1, grid: int = 20, min_ratio: float = 0.3, max_shift: int = 10,
                 max_samples: int = 1 << 18, seed: int = 0):
        super().__init__(spec, channel_axis, p=2.0, grid=grid, min_ratio=min_ratio, max_samples=max_samples,
                         seed=seed)
        self.max_shift = int(max_shift)
        if spec.scheme != "twin_uniform" or not isinstance(spec.granularity, PerTensor):  # its own scheme
            raise VitqError("the twin observer solves per-tensor twin_uniform specs")

    def solve(self):
        if not self.has_data:
            raise VitqError("observer has seen no data")
        x = self._samples.reshape(-1)
        signed = bool(self.min_val.min() < 0) if self.spec.signed is None else self.spec.signed
        top = 2 ** (self.spec.bits - 1) - 1
        peak = float(self.max_val.max().clamp_min(torch.finfo(torch.float32).eps))
        best = (float("inf"), None)
        for ratio in torch.linspace(self.min_ratio, 1.0, self.grid).tolist():
            s2 = peak * ratio / top
            for m in range(self.max_shift + 1):
                scale = torch.tensor([s2 / 2 ** m, s2])
                err = float((fake_quantize_twin(x, scale, self.spec.bits, signed) - x).pow(2).mean())
                if err < best[0]:
                    best = (err, scale)
        self._samples = None
        qmin, qmax = (-top - 1, top) if signed else (0, top)
        return best[1], torch.zeros(2), qmin, qmax
