"""Hessian-guided scale search for Linear layers, from PTQ4ViT (Yuan et al., ECCV 2022).

Minimizing a layer's plain output error treats every output element alike, but the task loss does not. PTQ4ViT
approximates the loss change by a second-order expansion whose Hessian is replaced by the squared gradient of the
loss with respect to the layer output ``O`` (a diagonal Fisher approximation), and searches scales minimizing::

    E[ sum_j (dL/dO_j)^2 * (O^_j - O_j)^2 ]

For each Linear with a per-tensor uniform input quantizer and per-channel (or per-tensor) uniform weights:

1. one float pass over the calibration images records the layer input ``X`` and ``dL/dO`` (a seeded subsample of
   at most ``max_rows`` token rows per layer); ``L`` is the cross-entropy against the float model's own prediction;
2. candidates are ratios of the min-max range: ``w_grid`` for weights (per output row: the objective separates
   over rows) and ``a_grid`` for the input (one ratio for the tensor);
3. ``rounds`` of alternating search: weights with the input quantized at its current scale, then the input with
   the weights quantized at theirs. ``inputs=False`` searches the weights only (inputs keep their observer);
   ``fisher=False`` drops the gradient weighting (plain output MSE), for ablations.

The found qparams are fixed with ``Quantizer.set_qparams``; ``freeze()`` then quantizes the weights once with
them. Quantizers of other kinds (log, twin-uniform, per-channel activations, already fixed ones) are left to their
observers; the weight search then uses the float input.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..convert import quant_modules
from ..granularity import PerChannel, PerTensor
from ..nn import QuantLinear
from ..primitives import fake_quantize, qparams_from_minmax, qrange


def _searchable_input(layer: QuantLinear) -> bool:
    q = layer.input_quantizer
    return (q.enabled and not q.has_qparams and q.scheme.affine and isinstance(q.spec.granularity, PerTensor)
            and q.has_observations)


def _searchable_weight(layer: QuantLinear) -> bool:
    q = layer.weight_quantizer
    g = q.spec.granularity if q.enabled else None
    return (q.enabled and not q.has_qparams and q.scheme.affine
            and (isinstance(g, PerTensor) or (isinstance(g, PerChannel) and g.axis in (None, 0))))


def _capture(model: nn.Module, layers: list[QuantLinear], batches: Sequence[torch.Tensor], max_rows: int,
             seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(X (rows, in), dL/dO (rows, out)) per layer, from float forward and backward passes."""
    gen = torch.Generator().manual_seed(seed)
    per_batch = max(1, max_rows // max(1, len(batches)))
    xs = [[] for _ in layers]
    gs = [[] for _ in layers]

    def hook(i):
        def fn(_m, args, out):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            idx = torch.randperm(x.shape[0], generator=gen)[:per_batch].to(x.device)
            xs[i].append(x[idx])
            out.register_hook(lambda g: gs[i].append(g.detach().reshape(-1, g.shape[-1])[idx]))
        return fn

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    hooks = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.enable_grad():
            for x in batches:
                x = x.detach().clone().requires_grad_(True)
                logits = model(x)
                F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum").backward()
    finally:
        for h in hooks:
            h.remove()
        for p in params:
            p.requires_grad_(True)
    return [(torch.cat(x).float(), torch.cat(g).float()) for x, g in zip(xs, gs)]


def _weight_qparams(w: torch.Tensor, spec, ratio: torch.Tensor):
    """Symmetric/asymmetric per-row (or per-tensor) qparams of ``w`` (out, in) shrunk by ``ratio`` ((out,) or ())."""
    per_row = isinstance(spec.granularity, PerChannel)
    lo = w.amin(1) if per_row else w.amin()
    hi = w.amax(1) if per_row else w.amax()
    signed = spec.signed if spec.signed is not None else bool(spec.symmetric and (w < 0).any())
    s, z = qparams_from_minmax(lo * ratio, hi * ratio, spec.bits, spec.symmetric, signed)
    return s, z, qrange(spec.bits, signed)


def _search_layer(layer: QuantLinear, x: torch.Tensor, g: torch.Tensor, rounds: int, w_grid, a_grid,
                  fisher: bool = True, inputs: bool = True) -> None:
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    w = layer.weight.detach().float()  # (out, in)
    ref = x @ w.t()  # (rows, out): the float output without bias (the bias cancels in the difference)
    h = g.pow(2) if fisher else torch.ones_like(g)  # (rows, out): diagonal Fisher weights
    per_row = isinstance(wq.spec.granularity, PerChannel)
    search_input = inputs and _searchable_input(layer)
    if search_input:
        a_min, a_max, a_signed = iq.observed_minmax()
        a_qmin, a_qmax = qrange(iq.spec.bits, a_signed)

        def quant_x(ratio):
            s, z = qparams_from_minmax(a_min.reshape(()) * ratio, a_max.reshape(()) * ratio,
                                       iq.spec.bits, iq.spec.symmetric, a_signed)
            return fake_quantize(x, s, z, a_qmin, a_qmax), s, z
    a_ratio = 1.0
    w_ratio = torch.ones(w.shape[0]) if per_row else torch.tensor(1.0)
    xq = quant_x(a_ratio)[0] if search_input else x
    for _ in range(rounds):
        best = torch.full((w.shape[0],) if per_row else (), float("inf"))
        for r in w_grid:
            s, z, (qmin, qmax) = _weight_qparams(w, wq.spec, torch.tensor(r))
            wh = fake_quantize(w, s.reshape(-1, 1) if per_row else s, z.reshape(-1, 1) if per_row else z, qmin, qmax)
            err = (h * (xq @ wh.t() - ref).pow(2)).sum(0)  # (out,)
            err = err if per_row else err.sum()
            better = err < best
            best = torch.where(better, err, best)
            w_ratio = torch.where(better, torch.tensor(r), w_ratio)
        s, z, (qmin, qmax) = _weight_qparams(w, wq.spec, w_ratio)
        wh = fake_quantize(w, s.reshape(-1, 1) if per_row else s, z.reshape(-1, 1) if per_row else z, qmin, qmax)
        if not search_input:
            break
        best_a = float("inf")
        for r in a_grid:
            err = float((h * (quant_x(r)[0] @ wh.t() - ref).pow(2)).sum())
            if err < best_a:
                best_a, a_ratio = err, r
        xq = quant_x(a_ratio)[0]
    stat_shape = (-1, 1) if per_row else ()
    wq.set_qparams(s.reshape(stat_shape), z.reshape(stat_shape), qmin, qmax)
    if search_input:
        _, s_a, z_a = quant_x(a_ratio)
        iq.set_qparams(s_a, z_a, a_qmin, a_qmax)


ARG_LIMITS = {"rounds": (1, None), "max_rows": (1, None), "seed": (0, None)}


def apply(model: nn.Module, batches: Sequence[torch.Tensor], rounds: int = 2, max_rows: int = 2048,
          w_grid: Sequence[float] = tuple(0.5 + 0.02 * i for i in range(26)),
          a_grid: Sequence[float] = tuple(0.2 + 0.02 * i for i in range(41)), seed: int = 0,
          fisher: bool = True, inputs: bool = True) -> None:
    """Search the weight and input scales of every eligible Linear of ``model`` (see module docstring)."""
    layers = [m for _, m in quant_modules(model) if isinstance(m, QuantLinear) and _searchable_weight(m)]
    if not layers:
        return
    captured = _capture(model, layers, batches, max_rows, seed)
    with torch.no_grad():
        for layer, (x, g) in zip(layers, captured):
            _search_layer(layer, x, g, int(rounds), [float(r) for r in w_grid], [float(r) for r in a_grid],
                          bool(fisher), bool(inputs))
