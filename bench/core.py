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
import time
from dataclasses import replace

import torch

from common import load_cifar, logits_of, quantize, table, top1, write_section
from vitq import PerChannel, QuantRule, preset
from vitq.primitives import sqnr_db


def capture_float(model, images, names: list[str]) -> dict[str, list[torch.Tensor]]:
    """Inputs ('<name>:in') and outputs ('<name>:out') of the named float modules on ``images``."""
    store: dict[str, list[torch.Tensor]] = {}
    mods = dict(model.named_modules())
    hooks = []
    for n in names:
        def hook(m, i, o, n=n):
            store.setdefault(f"{n}:in", []).append(i[0].detach())
            store.setdefault(f"{n}:out", []).append(o.detach())
        hooks.append(mods[n].register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def qkv_sqnr(qmodel, captured, depth: int, C: int) -> dict[str, float]:
    """Mean over blocks of the SQNR of Q, K and V quantized from the float qkv output (local error)."""
    acc = {"Q": [], "K": [], "V": []}
    with torch.no_grad():
        for b in range(depth):
            attn = qmodel.blocks[b].attn
            x = captured[f"blocks.{b}.attn.qkv:out"]
            parts = {"Q": x[..., :C], "K": x[..., C:2 * C], "V": x[..., 2 * C:]}
            if attn.qkv_mode == "split":
                qs = {"Q": attn.q_quantizer, "K": attn.k_quantizer, "V": attn.v_quantizer}
                quant = {k: qs[k](v) for k, v in parts.items()}
            else:
                y = attn.qkv.output_quantizer(x)
                quant = {"Q": y[..., :C], "K": y[..., C:2 * C], "V": y[..., 2 * C:]}
            for k in acc:
                acc[k].append(sqnr_db(parts[k], quant[k]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def input_sqnr(qmodel, captured, depth: int, layer: str) -> float:
    """Mean over blocks of the SQNR of a layer's input quantizer on the float input (local error)."""
    vals = []
    with torch.no_grad():
        for b in range(depth):
            name = f"blocks.{b}.{layer}"
            q = dict(qmodel.named_modules())[f"{name}.input_quantizer"]
            x = captured[f"{name}:in"]
            vals.append(sqnr_db(x, q(x)))
    return sum(vals) / len(vals)


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
    depth, C = len(model.blocks), model.embed_dim
    probe = images[:256]
    names = [f"blocks.{b}.attn.qkv" for b in range(depth)] + [f"blocks.{b}.mlp.fc1" for b in range(depth)]
    captured = capture_float(model, probe, names)
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
        fused_qm, fused_acc, *_ = run(preset(name, qkv="fused"))
        for mode, qm, acc in (("split", split_qm, split_acc), ("fused", fused_qm, fused_acc)):
            s = qkv_sqnr(qm, captured, depth, C)
            split_rows.append([name, mode, acc, s["Q"], s["K"], s["V"]])
        pc_qm, pc_acc, *_ = run(per_channel_inputs(preset(name)))
        for gran, qm, acc in (("per-tensor", split_qm, split_acc), ("per-channel", pc_qm, pc_acc)):
            gran_rows.append([name, gran, acc, input_sqnr(qm, captured, depth, "attn.qkv"),
                              input_sqnr(qm, captured, depth, "mlp.fc1")])

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
          "SQNR (dB) of Q, K and V quantized from the float qkv output, mean over the 12 blocks, 256 test images.",
          "",
          table(["preset", "qkv", "top-1 (%)", "Q SQNR", "K SQNR", "V SQNR"], split_rows),
          "",
          "### Per-tensor vs per-channel activation scales at the qkv and fc1 inputs (finding 3)",
          "",
          "Input SQNR (dB) of the qkv and fc1 input quantizers on float inputs, mean over blocks.",
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
