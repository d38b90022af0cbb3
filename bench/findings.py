"""The three findings measured by `vitq analyze` on the shared CIFAR-10 ViT at w6a6 and w4a4.

    python bench/findings.py [--reuse]

Runs ``vitq analyze`` (256 calibration images from train/, 1,000 test images, 128 probe images) for each preset
into runs/cifar-<preset>-analysis/ (``--reuse`` reads an existing analysis.json there instead) and writes the
``findings`` section of docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import CIFAR_DATA, CIFAR_MODEL, REPO, table, write_section

ROLES = ["attn.qkv.input_quantizer", "attn.q_quantizer", "attn.k_quantizer", "attn.v_quantizer",
         "attn.matmul_av.a_quantizer", "attn.proj.input_quantizer", "mlp.fc1.input_quantizer",
         "mlp.fc2.input_quantizer"]


def run(preset: str, reuse: bool) -> dict:
    out = REPO / "runs" / f"cifar-{preset}-analysis"
    if not (reuse and (out / "analysis.json").is_file()):
        subprocess.run([sys.executable, "-m", "vitq.cli", "analyze", "--checkpoint", str(CIFAR_MODEL), "--data",
                        str(CIFAR_DATA), "--preset", preset, "--calib-size", "256", "--limit", "1000",
                        "--out", str(out), "--force", "--quiet"], check=True)
    return json.loads((out / "analysis.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reuse", action="store_true", help="use runs/cifar-<preset>-analysis/analysis.json if present")
    args = ap.parse_args()
    qkv_rows, dq_rows, gran_rows, sens_rows, abl_rows = [], [], [], [], []
    for preset in ("w6a6", "w4a4"):
        a = run(preset, args.reuse)
        s, f = a["summary"], a["findings"]
        for mode, r in f["split_vs_fused"].items():
            m = r["sqnr_db_mean"]
            qkv_rows.append([preset, mode, r["top1"], m["Q"], m["K"], m["V"]])
        dq = f["double_quantization"]
        dq_rows.append([preset, f"{len(dq['on_grid_layers'])} / {len(dq['layers'])}",
                        statistics.mean(r["sqnr_once_db"] for r in dq["layers"]),
                        statistics.mean(r["sqnr_twice_db"] for r in dq["layers"]), dq["mean_loss_db"]])
        for role in ROLES:
            rows = [r for n, r in a["granularity"].items() if n.endswith(role)]
            if rows:
                means = [statistics.mean(r["sqnr_db"][g] for r in rows)
                         for g in ("per_tensor", "per_channel", "per_token")]
                picks = sorted({r["recommended"] for r in rows})
                gran_rows.append([preset, f"blocks.*.{role}", *means, ", ".join(picks)])
        sens_rows.append([preset, s["fp_top1"], s["q_top1"],
                          ", ".join(f"{r['layer']} ({100 * r['share']:.0f}%)" for r in a["sensitivity"][:3]),
                          round(s["seconds"])])
        worst = min(a["ablation"], key=lambda r: r["top1_only_this_block"])
        abl_rows.append([preset, worst["block"], worst["top1_only_this_block"],
                         " ".join(f"{r['top1_blocks_0_to_i']:.1f}" for r in a["ablation"])])
    md = ["## The three findings on the shared CIFAR-10 ViT (`vitq analyze`)",
          "",
          "`python bench/findings.py`: `vitq analyze --checkpoint cifar10_vit_tiny.safetensors --data cifar10 "
          "--preset <p> --calib-size 256 --limit 1000`, 128 probe images for tensor statistics. Presets as in the "
          "core section. Reports: `runs/cifar-<p>-analysis/report.html`.",
          "",
          "### 1. Split vs fused QKV (top-1 on the 1,000 images; SQNR in dB, mean over blocks, local error)",
          "",
          table(["preset", "qkv", "top-1 (%)", "Q SQNR", "K SQNR", "V SQNR"], qkv_rows),
          "",
          "### 2. Double quantization (weights; second pass on a grid of the other granularity)",
          "",
          table(["preset", "weights already on a grid", "SQNR once (dB)", "SQNR twice (dB)", "mean loss (dB)"],
                dq_rows),
          "",
          "### 3. Per-tensor vs per-channel vs per-token (activation SQNR in dB, mean over blocks)",
          "",
          table(["preset", "quantizer", "per-tensor", "per-channel", "per-token", "recommended"], gran_rows),
          "",
          "### Where the error comes from",
          "",
          table(["preset", "float top-1", "quantized top-1", "most sensitive layers (share of summed KL)",
                 "analyze time (s)"], sens_rows),
          "",
          table(["preset", "worst block alone", "top-1 with only it quantized", "top-1 with blocks 0..i quantized"],
                abl_rows)]
    write_section("findings", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
