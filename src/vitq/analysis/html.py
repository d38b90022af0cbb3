"""The self-contained HTML report of ``vitq analyze`` (plots embedded as base64 PNG, no external files)."""
from __future__ import annotations

import html
import math

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;
     padding:0 1em;line-height:1.45}
h1{border-bottom:2px solid #345}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef2f6}
td:first-child,th:first-child{text-align:left}
.note{background:#f6f8e8;border-left:4px solid #9a3;padding:0.5em 1em;margin:1em 0}
.bad{color:#b22}.good{color:#272}img{max-width:100%;margin:0.5em 0}
nav a{margin-right:1em}details{margin:0.5em 0}
"""


def _f(v, digits: int = 2) -> str:
    if isinstance(v, str):
        return html.escape(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return html.escape(str(v))


def table(header: list[str], rows: list[list], digits: int = 2) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_f(c, digits)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def render(a: dict, figs: dict) -> str:
    """The whole report from the analysis dict ``a`` and the figures ``figs``."""
    s = a["summary"]
    f = a["findings"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vitq analysis: {html.escape(s['model'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>vitq analysis: {html.escape(s['model'])}, recipe {html.escape(s['recipe'])}</h1>",
             "<nav>" + "".join(f"<a href='#{k}'>{t}</a>" for k, t in [
                 ("summary", "Summary"), ("findings", "Findings"), ("sensitivity", "Sensitivity"),
                 ("blocks", "Blocks"), ("layers", "Layers"), ("granularity", "Granularity"),
                 ("distributions", "Distributions"), ("quantizers", "Quantizers")]) + "</nav>"]

    parts.append("<h2 id='summary'>Summary</h2>")
    parts.append(table(["", ""], [
        ["model", s["model"]], ["recipe", s["recipe"]], ["qkv", s["qkv"]],
        ["calibration images", s["calib_images"]], ["evaluation images", s["eval_images"]],
        ["probe images (tensor statistics)", s["probe_images"]],
        ["float top-1 (%)", s["fp_top1"]], ["quantized top-1 (%)", s["q_top1"]],
        ["top-1 agreement (%)", s["agreement"]], ["analysis time (s)", s["seconds"]]]))
    parts.append(f"<div class='note'>{'<br>'.join(html.escape(t) for t in a['advice'])}</div>")

    parts.append("<h2 id='findings'>The three findings, measured on this model</h2>")
    sf = f["split_vs_fused"]
    parts.append("<h3>1. Split vs fused QKV quantization</h3>")
    parts.append("<p>SQNR (dB) of Q, K and V quantized from the float qkv output (mean over blocks), and top-1 of "
                 "the whole model under each mode.</p>")
    parts.append(table(["qkv mode", "top-1 (%)", "Q SQNR", "K SQNR", "V SQNR"],
                       [[m, r["top1"], r["sqnr_db_mean"]["Q"], r["sqnr_db_mean"]["K"], r["sqnr_db_mean"]["V"]]
                        for m, r in sf.items()]))
    dq = f["double_quantization"]
    parts.append("<h3>2. Double quantization</h3>")
    parts.append(f"<p>Weights of the given model already on a quantization grid: "
                 f"<b>{len(dq['on_grid_layers'])}</b> of {len(dq['layers'])} layers"
                 f"{' (' + html.escape(', '.join(dq['on_grid_layers'][:8])) + ')' if dq['on_grid_layers'] else ''}."
                 f" Quantizing a weight a second time on a different grid of the same bits (the other granularity) "
                 f"costs on average "
                 f"<b>{dq['mean_loss_db']:.2f} dB</b> of weight SQNR; vitq quantizes each weight exactly once and "
                 "refuses a second freeze.</p>")
    parts.append("<details><summary>per layer</summary>" + table(
        ["layer", "bits", "on grid", "second grid", "SQNR once (dB)", "SQNR twice (dB)", "loss (dB)"],
        [[r["layer"], r["bits"], r["on_grid"], r["second_grid"], r["sqnr_once_db"], r["sqnr_twice_db"], r["loss_db"]]
         for r in dq["layers"]]) + "</details>")
    parts.append("<h3>3. Per-tensor vs per-channel vs per-token</h3>")
    g = a["granularity"]
    counts = {}
    for r in g.values():
        counts[r["recommended"]] = counts.get(r["recommended"], 0) + 1
    parts.append(f"<p>Recommended static granularity per activation quantizer (per-tensor unless per-channel gains "
                 f"more than 1 dB): {html.escape(', '.join(f'{k}: {v}' for k, v in sorted(counts.items())))}. "
                 "Full table in <a href='#granularity'>Granularity</a>.</p>")

    parts.append("<h2 id='sensitivity'>Sensitivity ranking</h2>")
    parts.append("<p>Each layer quantized alone (everything else float); KL(float || that model) on the probe "
                 "images. Spend extra bits on the top of this list (it is also in analysis.json as "
                 "<code>sensitivity</code>).</p>")
    parts.append(img(figs["sensitivity"], "sensitivity"))
    parts.append(table(["rank", "layer", "bits", "KL", "share of total", "agreement (%)"],
                       [[r["rank"], r["layer"], r.get("bits", ""), r["kl"], r["share"], r["agreement"]]
                        for r in a["sensitivity"]],
                       digits=4))

    parts.append("<h2 id='blocks'>Blocks</h2>")
    parts.append(img(figs["blocks"], "blocks"))
    abl = {r["block"]: r for r in a["ablation"]}
    parts.append(table(["block", "output SQNR (dB)", "output MSE", "cosine", "top-1 only this block",
                        "top-1 blocks 0..i"],
                       [[n, b["sqnr_db"], b["mse"], b["cosine"], abl.get(i, {}).get("top1_only_this_block", ""),
                         abl.get(i, {}).get("top1_blocks_0_to_i", "")]
                        for i, (n, b) in enumerate(a["blocks"].items())], digits=4))

    parts.append("<h2 id='layers'>Layers</h2>")
    parts.append(img(figs["layers"], "layers"))
    parts.append(table(["layer", "type", "local SQNR", "accum. SQNR", "accum. MSE", "accum. cosine",
                        "weight SQNR", "float ms", "fake-quant ms"],
                       [[n, r["type"], r["local"]["sqnr_db"], r["accumulated"]["sqnr_db"], r["accumulated"]["mse"],
                         r["accumulated"]["cosine"], a["weights"].get(n, {}).get("sqnr_db", ""), r["ms_float"],
                         r["ms_fakequant"]] for n, r in a["layers"].items()], digits=4))

    parts.append("<h2 id='granularity'>Granularity per activation quantizer</h2>")
    parts.append(img(figs["granularity"], "granularity"))
    parts.append("<p>SQNR (dB) of each activation quantizer's output on float inputs under each granularity "
                 "(per-tensor and per-channel calibrated with the recipe's observer; per-token dynamic).</p>")
    parts.append(table(["quantizer", "per-tensor", "per-channel", "per-token", "recommended", "gain (dB)",
                        "per-token gain (dB)"],
                       [[n, r["sqnr_db"].get("per_tensor"), r["sqnr_db"].get("per_channel"),
                         r["sqnr_db"].get("per_token"), r["recommended"], r["gain_db"], r["per_token_gain_db"]]
                        for n, r in g.items()]))

    parts.append("<h2 id='distributions'>Distributions</h2>")
    for title, b64 in figs["distributions"].items():
        parts.append(f"<h3>{html.escape(title)}</h3>" + img(b64, title))
    for title, b64 in figs["channels"].items():
        parts.append(f"<h3>Per-channel min/max: {html.escape(title)}</h3>" + img(b64, title))

    parts.append("<h2 id='quantizers'>Quantizers</h2>")
    parts.append(table(["quantizer", "bits", "granularity", "local SQNR", "local MSE", "local cosine",
                        "accum. SQNR", "accum. cosine"],
                       [[n, r["spec"]["bits"], r["spec"]["granularity"]["kind"], r["local"]["sqnr_db"],
                         r["local"]["mse"], r["local"]["cosine"], r["accumulated"]["sqnr_db"],
                         r["accumulated"]["cosine"]] for n, r in a["quantizers"].items()], digits=4))
    parts.append("</body></html>")
    return "\n".join(parts)
