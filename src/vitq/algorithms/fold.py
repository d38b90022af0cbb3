"""Per-channel rescaling of a LayerNorm output, folded into the LayerNorm affine and the Linear layers it feeds.

RepQ-ViT and SmoothQuant both rewrite ``y = norm(x)`` into ``y' = y / r - b`` (per channel ``c``: ``r[c] > 0``,
``b[c]``) and compensate in every Linear that reads ``y``, so the float model computes the same function::

    norm:   gamma' = gamma / r          beta' = beta / r - b
    linear: W' = W * r (per input column)   bias' = bias + W' @ b

since ``W' y' + bias' = W r (y / r - b) + bias + W r b = W y + bias``. Only the rounding of float32 changes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..nn import QuantAttention, QuantLinear


def norm_linear_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, list[QuantLinear]]]:
    """Each (name, LayerNorm, Linears fed only by it) of a converted timm ViT: norm1 -> qkv, norm2 -> fc1."""
    pairs = []
    for name, block in model.named_modules():
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        norm1, norm2 = getattr(block, "norm1", None), getattr(block, "norm2", None)
        prefix = f"{name}." if name else ""
        if isinstance(norm1, nn.LayerNorm) and norm1.elementwise_affine and isinstance(attn, QuantAttention):
            pairs.append((f"{prefix}norm1", norm1, [attn.qkv]))
        fc1 = getattr(mlp, "fc1", None)
        if isinstance(norm2, nn.LayerNorm) and norm2.elementwise_affine and isinstance(fc1, QuantLinear):
            pairs.append((f"{prefix}norm2", norm2, [fc1]))
    return pairs


@torch.no_grad()
def fold_channel_affine(norm: nn.LayerNorm, linears: Sequence[QuantLinear], r: torch.Tensor,
                        b: torch.Tensor) -> None:
    """Make ``norm`` output ``y / r - b`` and every Linear in ``linears`` compensate (see module docstring)."""
    r, b = r.to(norm.weight), b.to(norm.weight)
    norm.weight.div_(r)
    if norm.bias is None:
        norm.bias = nn.Parameter(-b.clone())
    else:
        norm.bias.copy_(norm.bias / r - b)
    for lin in linears:
        lin.weight.mul_(r)  # (out, in) * (in,)
        shift = lin.weight @ b  # (out,)
        if lin.bias is None:
            lin.bias = nn.Parameter(shift)
        else:
            lin.bias.add_(shift)


@torch.no_grad()
def feed_inputs(model: nn.Module, layers: Sequence[nn.Module], batches: Sequence[torch.Tensor],
                fn: Callable[[int, torch.Tensor], None]) -> None:
    """Run the float model (quantizers as they are: off before calibration) over ``batches`` and call
    ``fn(i, x)`` with the input ``x`` of ``layers[i]`` on every forward."""
    hooks = [layer.register_forward_pre_hook(lambda _m, args, i=i: fn(i, args[0].detach()))
             for i, layer in enumerate(layers)]
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
