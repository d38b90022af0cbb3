"""matplotlib figures of the analysis, returned as base64 PNG strings to embed in the HTML report."""
from __future__ import annotations

import base64
import io
import math
import re
from collections import defaultdict

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _grid(n: int, cols: int = 4):
    plt = _plt()
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _num(v) -> float:
    return float(v)


def blocks_figure(blocks: dict, ablation: list[dict], fp_top1: float, q_top1: float) -> str:
    """Block output SQNR (accumulated) and the block ablation curves."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
    names = list(blocks)
    a.plot(range(len(names)), [_num(blocks[n]["sqnr_db"]) for n in names], "o-")
    a.set(xlabel="block", ylabel="output SQNR (dB)", title="Block output error, everything upstream quantized")
    if ablation:
        idx = [r["block"] for r in ablation]
        b.plot(idx, [r["top1_only_this_block"] for r in ablation], "o-", label="only block i quantized")
        b.plot(idx, [r["top1_blocks_0_to_i"] for r in ablation], "s-", label="blocks 0..i quantized")
        b.axhline(fp_top1, color="k", ls="--", lw=1, label=f"float {fp_top1:.2f}")
        b.axhline(q_top1, color="r", ls=":", lw=1, label=f"all quantized {q_top1:.2f}")
        b.set(xlabel="block i", ylabel="top-1 (%)", title="Block ablation")
        b.legend(fontsize=7)
    return _png(fig)


def layers_figure(layers: dict) -> str:
    """Local vs accumulated output SQNR of every quant layer, in model order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 3.6), layout="constrained")
    names = list(layers)
    ax.plot([_num(layers[n]["local"]["sqnr_db"]) for n in names], ".-", label="local (float input)")
    ax.plot([_num(layers[n]["accumulated"]["sqnr_db"]) for n in names], ".-", label="accumulated")
    ax.set(xlabel="layer (model order)", ylabel="output SQNR (dB)", title="Per-layer error")
    ax.legend(fontsize=8)
    return _png(fig)


def distribution_figures(samples: dict[str, torch.Tensor]) -> dict[str, str]:
    """Histograms (log count) per tensor kind, one panel per block; Q, K and V share a panel."""
    by_kind: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, t in samples.items():
        block, kind = key.split("|")
        by_kind[kind][block] = t
    figures = {}
    qkv = {b: {k: by_kind[k][b] for k in ("Q", "K", "V") if b in by_kind.get(k, {})} for b in by_kind.get("Q", {})}
    panels = [("Q, K, V right after the qkv Linear", qkv)]
    panels += [(kind, {b: {kind: t} for b, t in blocks.items()}) for kind, blocks in by_kind.items()
               if kind not in ("Q", "K", "V")]
    for title, per_block in panels:
        if not per_block:
            continue
        order = sorted(per_block, key=lambda b: int(re.sub(r"\D", "", b) or 0))
        fig, axes = _grid(len(order))
        for ax, b in zip(axes, order):
            for label, t in per_block[b].items():
                counts, edges = torch.histogram(t.float(), bins=120)
                ax.stairs(counts.numpy(), edges.numpy(), label=label)
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(_plt().NullLocator())
            ax.set_title(b, fontsize=8)
            ax.tick_params(labelsize=7)
            if len(per_block[b]) > 1:
                ax.legend(fontsize=7)
        fig.suptitle(title)
        figures[title] = _png(fig)
    return figures


def channel_figures(channel_minmax: dict) -> dict[str, str]:
    """Per-channel min and max of the qkv and fc1 inputs, one panel per block: outlier channels stand out."""
    by_kind: dict[str, dict] = defaultdict(dict)
    for key, mm in channel_minmax.items():
        block, kind = key.split("|")
        by_kind[kind][block] = mm
    figures = {}
    for kind, per_block in by_kind.items():
        order = sorted(per_block, key=lambda b: int(re.sub(r"\D", "", b) or 0))
        fig, axes = _grid(len(order))
        for ax, b in zip(axes, order):
            lo, hi = per_block[b]
            ax.plot(hi.numpy(), lw=0.7, label="max")
            ax.plot(lo.numpy(), lw=0.7, label="min")
            ax.set_title(b, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Per-channel min/max of the {kind}")
        figures[kind] = _png(fig)
    return figures


def sensitivity_figure(rows: list[dict], top: int = 20) -> str:
    plt = _plt()
    rows = rows[:top]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1), layout="constrained")
    ax.barh([r["layer"] for r in rows][::-1], [r["kl"] for r in rows][::-1])
    ax.set(xlabel="KL(float || only this layer quantized)", title=f"Most sensitive layers (top {len(rows)})")
    ax.tick_params(labelsize=7)
    return _png(fig)


def granularity_figure(recs: dict[str, dict]) -> str:
    """Mean SQNR per quantizer role (name with the block index removed) under each granularity."""
    plt = _plt()
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, r in recs.items():
        role = re.sub(r"blocks\.\d+\.", "blocks.*.", name)
        for g, v in r["sqnr_db"].items():
            if math.isfinite(v):
                groups[role][g].append(v)
    roles = list(groups)
    fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
    width = 0.27
    for k, g in enumerate(("per_tensor", "per_channel", "per_token")):
        vals = [sum(groups[r][g]) / len(groups[r][g]) if groups[r][g] else 0.0 for r in roles]
        ax.bar([i + (k - 1) * width for i in range(len(roles))], vals, width, label=g)
    ax.set_xticks(range(len(roles)), roles, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="SQNR (dB)", title="Activation quantizer error by granularity (mean over blocks)")
    ax.legend(fontsize=8)
    return _png(fig)
