"""vitq.analyze: where the quantization error of a ViT comes from, as analysis.json and a self-contained HTML report.

    report = vitq.analyze(model, "w4a4", calib=calib_loader, val=val_loader, out="runs/analysis")

Per quantizer and per layer (local and accumulated SQNR / MSE / cosine, float vs fake-quant time), per block (output
error, block ablation), distributions (Q/K/V, post-LayerNorm, post-GELU, post-softmax, per-channel min/max), the
three findings measured on the model (split vs fused QKV, double quantization, per-tensor vs per-channel vs
per-token with a recommendation per quantizer) and a sensitivity ranking of layers for mixed precision.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Optional

import torch
from torch import nn

from ..pipeline import quantize
from ..recipes import resolve_config
from ..errors import VitqError
from ..models import model_name
from ..nn import QuantAttention
from ..progress import progress
from . import plots
from .collect import calibrate_variants, probe, weight_stats
from .html import render
from .mixer import Mixer
from .studies import (block_ablation, double_quantization, labels_of, predictions, recommend, sensitivity,
                      split_vs_fused, top1)


def _rebatch(batches: list, n: int, size: int) -> list:
    xs = torch.cat([x for x, _ in batches])[:n]
    ys = torch.cat([y for _, y in batches])[:n]
    return [(xs[i:i + size], ys[i:i + size]) for i in range(0, len(xs), size)]


def _advice(a: dict) -> list[str]:
    """Plain-language takeaways: what to change first."""
    s, f = a["summary"], a["findings"]
    lines = [f"Quantized top-1 {s['q_top1']:.2f}% vs float {s['fp_top1']:.2f}% "
             f"({s['q_top1'] - s['fp_top1']:+.2f} points)."]
    if a["sensitivity"]:
        top = a["sensitivity"][:3]
        lines.append("Most sensitive layers: " + ", ".join(
            f"{r['layer']} ({r['bits'] + ', ' if r.get('bits') else ''}{100 * r['share']:.0f}% of the summed KL)"
            for r in top) + "; keep them at higher bits first.")
    if a["ablation"]:
        worst = min(a["ablation"], key=lambda r: r["top1_only_this_block"])
        lines.append(f"Block {worst['block']} costs the most accuracy alone "
                     f"({worst['top1_only_this_block']:.2f}% with only it quantized).")
    sf = f.get("split_vs_fused")
    if sf and "split" in sf and "fused" in sf:
        dv = sf["split"]["sqnr_db_mean"]["V"] - sf["fused"]["sqnr_db_mean"]["V"]
        lines.append(f"Split QKV: V SQNR {dv:+.2f} dB vs fused, top-1 {sf['split']['top1']:.2f}% vs "
                     f"{sf['fused']['top1']:.2f}% fused.")
    recs = a["granularity"]
    better = [n for n, r in recs.items() if r["recommended"] != "per_tensor"]
    if recs:
        best = max(recs, key=lambda n: recs[n]["gain_db"])
        lines.append(f"{len(better)} of {len(recs)} activation quantizers gain more than 1 dB from per-channel scales"
                     + (f" (most: {best}, +{recs[best]['gain_db']:.1f} dB)" if better else "")
                     + "; per-channel activation scales need folding to deploy.")
    dq = f["double_quantization"]
    lines.append(f"{len(dq['on_grid_layers'])} weight tensors already lie on a quantization grid; a second "
                 f"quantization on another grid would cost {dq['mean_loss_db']:.2f} dB of weight SQNR"
                 + (" (the checkpoint was quantized before: do not quantize it again)" if dq["on_grid_layers"] else "")
                 + ".")
    return lines


def _to_cpu(value):
    """``value`` with every tensor in it (nested in dicts, lists, tuples) moved to the CPU, for plots and JSON."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def analyze(model: nn.Module, config, calib: Iterable, val: Iterable, out=None, force: bool = False,
            probe_images: int = 128, show_progress: bool = True, info: Optional[dict] = None,
            device=None) -> dict:
    """Quantize ``model`` with ``config`` on ``calib`` and analyze it on ``val`` (see module docstring), on
    ``device`` (default: where the model is).

    Returns the analysis dict (what ``analysis.json`` holds); with ``out``, writes ``report.html`` and
    ``analysis.json`` there (an existing folder only with ``force``).
    """
    if not hasattr(model, "blocks"):
        raise VitqError("analyze expects a ViT with a 'blocks' sequence (timm VisionTransformer layout)")
    if probe_images < 1:
        raise VitqError(f"probe_images must be at least 1, got {probe_images}")
    t_start = time.perf_counter()
    config = resolve_config(config)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    calib = [(b[0] if isinstance(b, (tuple, list)) else b).to(device) for b in calib]
    qmodel = quantize(model, config, calib=calib, device=device, show_progress=show_progress)
    batches = [(x.to(device), y.to(device)) for x, y in progress(val, desc="load eval", disable=not show_progress)]
    if not batches:
        raise VitqError("evaluation data is empty")
    labels = labels_of(batches)
    mixer = Mixer(model, qmodel)
    fp_pred, q_pred = predictions(model, batches), predictions(qmodel, batches)
    probe_batches = _rebatch(batches, probe_images, 32)
    probe_x = torch.cat([x for x, _ in probe_batches])

    variants = calibrate_variants(mixer, qmodel, calib)
    p = _to_cpu(probe(mixer, qmodel, progress(probe_batches, desc="probe", disable=not show_progress), variants))
    ablation = block_ablation(mixer, batches, show_progress)
    sens = sensitivity(mixer, probe_x, show_progress)
    findings = {"double_quantization": double_quantization(model, qmodel)}
    if all(isinstance(getattr(b, "attn", None), QuantAttention) for b in qmodel.blocks):
        findings["split_vs_fused"] = split_vs_fused(model, qmodel, calib, batches, probe_x, show_progress)
    else:
        findings["split_vs_fused"] = {}
        findings["split_vs_fused_skipped"] = "not every block has a quantized fused-qkv attention"

    a = {
        "summary": {"model": model_name(model), "recipe": config.name, "qkv": config.qkv,
                    "calib_images": sum((b[0] if isinstance(b, (list, tuple)) else b).shape[0] for b in calib),
                    "eval_images": len(labels), "probe_images": len(probe_x),
                    "fp_top1": top1(fp_pred, labels), "q_top1": top1(q_pred, labels),
                    "agreement": 100.0 * (fp_pred == q_pred).float().mean().item(), **(info or {})},
        "findings": findings,
        "granularity": recommend(p["granularity"]),
        "sensitivity": sens,
        "ablation": ablation,
        "blocks": p["blocks"],
        "layers": p["layers"],
        "weights": weight_stats(mixer),
        "quantizers": p["quantizers"],
        "config": config.to_dict(),
    }
    a["summary"]["seconds"] = time.perf_counter() - t_start
    a["advice"] = _advice(a)
    if out is not None:
        figs = {"blocks": plots.blocks_figure(a["blocks"], ablation, a["summary"]["fp_top1"],
                                              a["summary"]["q_top1"]),
                "layers": plots.layers_figure(a["layers"]),
                "sensitivity": plots.sensitivity_figure(sens),
                "granularity": plots.granularity_figure(a["granularity"]),
                "distributions": plots.distribution_figures(p["samples"]),
                "channels": plots.channel_figures(p["channel_minmax"])}
        from ..output import staged_output

        with staged_output(out, force) as tmp:
            (tmp / "analysis.json").write_text(json.dumps(a, indent=1, default=str) + "\n")
            (tmp / "report.html").write_text(render(a, figs))
    return a
