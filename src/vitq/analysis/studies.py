"""Model-level studies: block ablation, per-layer sensitivity, split vs fused QKV, and the double-quantization check.

All of them run on batches already in memory (decoded once), with the :class:`Mixer` switching layers between
float and quantized.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..pipeline import quantize
from ..config import QuantSpec
from ..convert import named_quantizers
from ..granularity import PerChannel, PerTensor
from ..progress import progress
from ..quantizer import Quantizer
from .metrics import ErrorStats
from .mixer import Mixer


@torch.no_grad()
def predictions(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Argmax predictions over all batches."""
    return torch.cat([model(x).argmax(-1) for x, _ in batches])


def labels_of(batches) -> torch.Tensor:
    return torch.cat([y for _, y in batches])


def top1(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (pred == labels).float().mean().item()


def block_ablation(mixer: Mixer, batches, show_progress: bool = True) -> list[dict]:
    """Top-1 with only block i quantized, and with blocks 0..i quantized, for every block i."""
    labels = labels_of(batches)
    blocks = len(mixer.model.blocks)
    layers = mixer.layer_names()
    per_block = [[n for n in layers if n.startswith(f"blocks.{i}.")] for i in range(blocks)]
    rows = []
    for i in progress(range(blocks), desc="block ablation", disable=not show_progress):
        with mixer.quantized(per_block[i]) as m:
            only = top1(predictions(m, batches), labels)
        with mixer.quantized([n for b in per_block[:i + 1] for n in b]) as m:
            upto = top1(predictions(m, batches), labels)
        rows.append({"block": i, "top1_only_this_block": only, "top1_blocks_0_to_i": upto})
    return rows


def unit_bits(module: nn.Module) -> str:
    """The bits of a quant layer's own enabled quantizers, e.g. ``w4 a6`` (weight, then activations; ``a4/8``
    when its activation quantizers differ, as the patch embedding's 8-bit image input does)."""
    w = sorted({q.spec.bits for _, q in module.own_quantizers() if q.enabled and q.is_weight})
    a = sorted({q.spec.bits for _, q in module.own_quantizers() if q.enabled and not q.is_weight})
    parts = ([f"w{'/'.join(map(str, w))}"] if w else []) + ([f"a{'/'.join(map(str, a))}"] if a else [])
    return " ".join(parts)


@torch.no_grad()
def sensitivity(mixer: Mixer, images: torch.Tensor, show_progress: bool = True) -> list[dict]:
    """Each layer quantized alone: mean KL(float || that) over ``images`` and its share of the summed KL.

    Sorted most sensitive first; the ``rank`` order is what a mixed-precision search would spend bits on.
    ``bits`` is the layer's bit widths in the analyzed recipe (:func:`unit_bits`; per layer in a mixed recipe).
    """
    ref = F.log_softmax(mixer.model(images), -1)
    rows = []
    for name in progress(mixer.layer_names(), desc="sensitivity", disable=not show_progress):
        with mixer.quantized([name]) as m:
            out = F.log_softmax(m(images), -1)
        kl = float(F.kl_div(out, ref, log_target=True, reduction="batchmean"))
        agree = 100.0 * (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
        rows.append({"layer": name, "bits": unit_bits(mixer.modules[name]), "kl": max(kl, 0.0), "agreement": agree})
    total = sum(r["kl"] for r in rows) or 1.0
    rows.sort(key=lambda r: -r["kl"])
    for rank, r in enumerate(rows, 1):
        r.update(rank=rank, share=r["kl"] / total)
    return rows


def split_vs_fused(float_model: nn.Module, qmodel: nn.Module, calib, batches, probe_images: torch.Tensor,
                   show_progress: bool = True) -> dict:
    """The same recipe with ``qkv`` split and fused: top-1 and the SQNR of Q, K and V per block (local error)."""
    cfg = qmodel.vitq_config
    other_mode = "fused" if cfg.qkv == "split" else "split"
    other = quantize(float_model, replace(cfg, qkv=other_mode), calib=calib, show_progress=show_progress)
    models = {cfg.qkv: qmodel, other_mode: other}
    labels = labels_of(batches)
    captured: dict[int, torch.Tensor] = {}
    hooks = [b.attn.qkv.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o.detach()))
             for k, b in enumerate(float_model.blocks)]
    with torch.no_grad():
        float_model(probe_images)
    for h in hooks:
        h.remove()
    out = {}
    for mode, m in models.items():
        per_block = []
        for k, blk in enumerate(m.blocks):
            x = captured[k]  # (B, N, 3C) float qkv output
            C = x.shape[-1] // 3
            with torch.no_grad():
                quant = blk.attn.quantize_qkv(x)
            row = {}
            for i, key in enumerate(("Q", "K", "V")):
                s = ErrorStats()
                s.update(x[..., i * C:(i + 1) * C], quant[i])
                row[key] = s.sqnr_db
            per_block.append(row)
        mean = {key: sum(r[key] for r in per_block) / len(per_block) for key in ("Q", "K", "V")}
        out[mode] = {"top1": top1(predictions(m, batches), labels), "sqnr_db_mean": mean, "per_block": per_block}
    return out


def _on_grid(w: torch.Tensor, spec: QuantSpec) -> bool:
    """True when ``w`` already lies on a grid of ``spec`` (quantizing it again with min-max changes nothing)."""
    err = (_fq_once(w, replace(spec, observer="minmax", observer_args=())) - w).abs().max()
    return bool(err <= 1e-6 * w.abs().max().clamp_min(1e-12))


def double_quantization(float_model: nn.Module, qmodel: nn.Module) -> dict:
    """Detect weights of the *given* model that already lie on a quantization grid, and measure what quantizing
    twice costs: the recipe's weight quantization once, vs once more on top with a grid of the same bits but the
    other granularity (per-tensor after per-channel, else per-channel), as a second tool with its own defaults
    would; both as SQNR against the float weight. (Re-quantizing on the *same* grid changes nothing: codes are
    fixed points. The damage comes from a second, different grid.)"""
    fmods = dict(float_model.named_modules())
    rows = []
    for name, q in named_quantizers(qmodel):
        if not (q.is_weight and q.has_qparams):
            continue
        layer = name.rsplit(".", 1)[0]
        w = fmods[layer].weight.detach().float()
        spec = q.spec
        once = _fq_once(w, spec)
        other = PerChannel() if isinstance(spec.granularity, PerTensor) else PerTensor()
        twice = _fq_once(once, replace(spec, granularity=other, observer="minmax", observer_args=()))
        s1, s2 = ErrorStats(), ErrorStats()
        s1.update(w, once)
        s2.update(w, twice)
        rows.append({"layer": layer, "bits": spec.bits, "on_grid": _on_grid(w, spec), "second_grid": other.kind,
                     "sqnr_once_db": s1.sqnr_db, "sqnr_twice_db": s2.sqnr_db,
                     "loss_db": s1.sqnr_db - s2.sqnr_db})
    on_grid = [r["layer"] for r in rows if r["on_grid"]]
    mean_loss = sum(r["loss_db"] for r in rows) / max(len(rows), 1)
    return {"layers": rows, "on_grid_layers": on_grid, "mean_loss_db": mean_loss}


def _fq_once(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``w`` fake-quantized once with ``spec`` (axis 0 as the channel), calibrated on ``w`` itself."""
    q = Quantizer(spec, channel_axis=0, is_weight=True)
    q.observe_tensor(w)
    q.solve()
    q.enable()
    return q(w)


def recommend(gran: dict[str, dict]) -> dict[str, dict]:
    """Per activation quantizer: the static granularity to freeze. Per-tensor unless per-channel gains more than
    1 dB: per-channel activation scales cost deployability (standard INT8 kernels take one activation scale, so
    channel scales must be folded into the previous layer), so they must earn it. The gain of dynamic per-token
    scales (computed at run time, no calibration) is reported beside it."""
    out = {}
    for name, d in gran.items():
        sq = {k: float(v["sqnr_db"]) for k, v in d.items()}  # float() also reads the "inf" strings
        base = sq.get("per_tensor", float("nan"))
        pc_gain = sq.get("per_channel", base) - base
        choice = "per_channel" if pc_gain > 1.0 else "per_tensor"
        out[name] = {"sqnr_db": sq, "recommended": choice, "gain_db": sq[choice] - base,
                     "per_token_gain_db": sq.get("per_token", float("nan")) - base}
    return out
