"""Core-engine figures on the shared CIFAR-10 ViT, full test set, 256 calibration images from train/.

    python bench/core.py [--calib-size 256] [--limit N]

Writes the ``core`` section of docs/results.md:
* float and w8a8 / w6a6 / w4a8 / w4a4 top-1 (presets: per-channel symmetric weights, per-tensor activations);
* split vs fused QKV quantization at w6a6 and w4a4: top-1 and the SQNR of Q, K and V (finding 1);
* per-tensor vs per-channel activation scales at the qkv and fc1 inputs: top-1 and input SQNR (finding 3);
* fake-quant evaluation throughput as a ratio to float, measured in this process.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from common import load_cifar, logits_of, quantize, table, top1, write_section
from vitq import PerChannel, QuantRule, preset
from vitq.analysis.collect import probe
from vitq.analysis.mixer import Mixer
from vitq.analysis.studies import split_vs_fused


def input_sqnr(float_model, qmodel, probe_batches, layers: tuple[str, ...]) -> dict[str, float]:
    """Per layer suffix (``attn.qkv``, ``mlp.fc1``): the local SQNR (dB) of its input quantizer on the float input,
    mean over blocks, as ``vitq.analysis`` measures it (``probe``, quantizer ``local`` error)."""
    p = probe(Mixer(float_model, qmodel), qmodel, probe_batches, variants={})["quantizers"]
    return {layer: statistics.mean(float(p[f"blocks.{b}.{layer}.input_quantizer"]["local"]["sqnr_db"])
                                   for b in range(len(qmodel.blocks)))
            for layer in layers}


def per_channel_inputs(cfg):
    """``cfg`` with per-channel activation scales at every qkv and fc1 input (first rules win)."""
    a = cfg.spec_for("blocks.0.mlp.fc1.input_quantizer")
    pc = replace(a, granularity=PerChannel())
    extra = (QuantRule("*.attn.qkv.input_quantizer", pc), QuantRule("*.mlp.fc1.input_quantizer", pc))
    return replace(cfg, rules=extra + cfg.rules, name=cfg.name + "-pc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    args = ap.parse_args()
    torch.manual_seed(0)
    t_start = time.time()
    model, calib, images, labels = load_cifar(args.calib_size, limit=args.limit)
    probe_images = images[:256]
    probe_batches = [probe_images[i:i + 32] for i in range(0, len(probe_images), 32)]
    test_batches = [(images[i:i + 250], labels[i:i + 250]) for i in range(0, len(images), 250)]
    fp_logits, fp_seconds = logits_of(model, images)
    fp = top1(fp_logits, labels)
    print(f"float top-1 {fp:.2f}% on {len(images)} images", flush=True)

    def run(cfg):
        qm, secs = quantize(model, cfg, calib)
        logits, seconds = logits_of(qm, images)
        agree = 100.0 * (logits.argmax(-1) == fp_logits.argmax(-1)).float().mean().item()
        acc = top1(logits, labels)
        print(f"{cfg.name:12s} qkv={cfg.qkv:5s} top-1 {acc:.2f}%  ({secs:.1f}s calibrate, {seconds:.1f}s eval)",
              flush=True)
        return qm, acc, agree, secs, seconds

    rows, split_rows, gran_rows = [], [], []
    ratio = None
    results = {}
    for name in ("w8a8", "w6a6", "w4a8", "w4a4"):
        qm, acc, agree, secs, seconds = run(preset(name))
        results[name] = (qm, acc)
        rows.append([name, acc, acc - fp, agree, secs])
        if name == "w8a8":
            ratio = fp_seconds / seconds
    for name in ("w6a6", "w4a4"):
        split_qm, split_acc = results[name]
        t0 = time.perf_counter()
        sf = split_vs_fused(model, split_qm, calib, test_batches, probe_images, show_progress=False)
        print(f"{name} split vs fused: fused top-1 {sf['fused']['top1']:.2f}% "
              f"({time.perf_counter() - t0:.1f}s calibrate fused + evaluate both)", flush=True)
        for mode in ("split", "fused"):
            s = sf[mode]["sqnr_db_mean"]
            split_rows.append([name, mode, sf[mode]["top1"], s["Q"], s["K"], s["V"]])
        pc_qm, pc_acc, *_ = run(per_channel_inputs(preset(name)))
        for gran, qm, acc in (("per-tensor", split_qm, split_acc), ("per-channel", pc_qm, pc_acc)):
            s = input_sqnr(model, qm, probe_batches, ("attn.qkv", "mlp.fc1"))
            gran_rows.append([name, gran, acc, s["attn.qkv"], s["mlp.fc1"]])

    md = ["## Core engine on the shared CIFAR-10 ViT",
          "",
          f"`python bench/core.py --calib-size {args.calib_size}`: {len(images)} test images, {args.calib_size} "
          f"calibration images drawn with seed 0 from `train/`. Presets: symmetric per-channel min-max weights, "
          "asymmetric per-tensor min-max activations at every Linear input, split Q/K/V and the softmax output; "
          "the image entering the patch embedding stays 8-bit; LayerNorm, GELU and residual adds stay float; "
          "patch embedding and head weights are quantized at the preset's bits.",
          "",
          f"Float top-1: **{fp:.2f}%**.",
          "",
          table(["preset", "top-1 (%)", "delta vs float", "agreement with float (%)", "calibrate+freeze (s)"], rows),
          "",
          "### Split vs fused QKV (finding 1)",
          "",
          f"SQNR (dB) of Q, K and V quantized from the float qkv output, mean over the {len(model.blocks)} blocks, "
          f"{len(probe_images)} test images (`vitq.analysis.studies.split_vs_fused`).",
          "",
          table(["preset", "qkv", "top-1 (%)", "Q SQNR", "K SQNR", "V SQNR"], split_rows),
          "",
          "### Per-tensor vs per-channel activation scales at the qkv and fc1 inputs (finding 3)",
          "",
          f"Input SQNR (dB) of the qkv and fc1 input quantizers on float inputs (local error, "
          f"`vitq.analysis` probe), mean over blocks, {len(probe_images)} test images.",
          "",
          table(["preset", "qkv/fc1 input scales", "top-1 (%)", "qkv input SQNR", "fc1 input SQNR"], gran_rows),
          "",
          f"### Throughput\n\nFake-quant (w8a8) evaluation throughput / float throughput in the same process: "
          f"**{ratio:.2f}** (float {len(images) / fp_seconds:.0f} images/s).",
          "",
          f"Total bench time: {time.time() - t_start:.0f} s."]
    write_section("core", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
