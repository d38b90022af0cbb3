"""Weight rounding with second-order error compensation, from GPTQ (Frantar et al., ICLR 2023).

Rounding each weight to its nearest level ignores that the layer's inputs are correlated: the error of one
rounded column could be cancelled by nudging the columns not yet rounded. GPTQ minimizes the layer's output
error ``|| W X - W^ X ||^2`` over the calibration inputs ``X`` column by column. With ``H = X X^T`` (the Hessian
of that objective, the same for every output row), rounding column ``i`` to ``q_i`` moves the remaining columns
by::

    W[:, i:] -= (w_i - q_i) / Hinv[i, i] * Hinv[i, i:]

where ``Hinv`` is the upper Cholesky factor of ``H^-1`` (GPTQ's numerically stable form). Columns go in blocks
(``block_size``), the updates to later blocks batched as one matrix product.

vitq keeps the weight quantizer's grid: its qparams (per output row or per tensor) are fixed before the pass,
from an earlier search (``hessian``) when one ran, else from the quantizer's own observer on the float weight.
The layer's float weight is then replaced by the rounded values, which sit exactly on that grid, so ``freeze()``
turns them into the same integer codes (rounding an on-grid value is exact: the weight is not quantized twice).

``H`` comes from the float model's inputs (one pass over the calibration images). Options: ``damp`` (added to
H's diagonal, as a fraction of its mean) and ``act_order`` (round the columns with the largest ``H[i, i]``
first).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..convert import quant_modules
from ..granularity import PerChannel, PerTensor
from ..nn import QuantLinear
from ..primitives import fake_quantize
from .fold import feed_inputs


def _eligible(layer: QuantLinear) -> bool:
    q = layer.weight_quantizer
    if not q.enabled or not q.scheme.affine:
        return False
    g = q.spec.granularity
    return isinstance(g, PerTensor) or (isinstance(g, PerChannel) and g.axis in (None, 0))


def _fix_grid(layer: QuantLinear) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The weight quantizer's (scale (out, 1) or (), zero point, qmin, qmax), fixed now if no search set them."""
    layer.fix_weight_grid()
    q = layer.weight_quantizer
    qmin, qmax = (int(v) for v in q.qrange)
    per_row = isinstance(q.spec.granularity, PerChannel)
    shape = (-1, 1) if per_row else ()
    return q.scale.reshape(shape), q.zero_point.reshape(shape), qmin, qmax


def gptq_round(w: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
               qmax: int, damp: float = 0.01, block_size: int = 128, act_order: bool = False) -> torch.Tensor:
    """Rounded ``w`` (out, in), on the grid of ``scale``/``zero_point`` ((out, 1) or ()), minimizing
    ``|| (w - w^) X ||^2`` for inputs with second moment ``h = X X^T`` (in, in)."""
    w = w.detach().double().clone()  # (out, in)
    h = h.detach().double().clone()  # (in, in)
    s = scale.double().reshape(-1)
    z = zero_point.double().reshape(-1)
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(w.shape[1])
    w, h = w[:, perm], h[perm][:, perm]
    h.diagonal().add_(damp * h.diagonal().mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # (in, in)
    q = torch.zeros_like(w)
    for i1 in range(0, w.shape[1], block_size):
        i2 = min(i1 + block_size, w.shape[1])
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, j]
            qc = fake_quantize(col, s, z, qmin, qmax)
            q[:, i1 + j] = qc
            e = (col - qc) / h1[j, j]
            w1[:, j:] -= e.unsqueeze(1) * h1[j, j:].unsqueeze(0)
            err1[:, j] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q[:, torch.argsort(perm)].float()


ARG_LIMITS = {"damp": (0.0, None), "block_size": (1, None)}


@torch.no_grad()
def apply(model: nn.Module, batches: Sequence[torch.Tensor], damp: float = 0.01, block_size: int = 128,
          act_order: bool = False) -> None:
    """Round the weights of every eligible Linear of ``model`` with GPTQ (see module docstring)."""
    layers = [m for _, m in quant_modules(model) if isinstance(m, QuantLinear) and _eligible(m)]
    if not layers:
        return
    grids = [_fix_grid(layer) for layer in layers]
    hs = [torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for m in layers]  # X X^T, (in, in)

    def add(i: int, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()  # (rows, in)
        hs[i] += x.t() @ x.to(hs[i].device)

    feed_inputs(model, layers, batches, add)
    for layer, grid, h in zip(layers, grids, hs):
        layer.weight.copy_(gptq_round(layer.weight, h, *grid, damp=damp, block_size=block_size,
                                      act_order=act_order))
