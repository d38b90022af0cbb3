"""ONNX QDQ export: accuracy parity with the fake-quant model, and CPU speed against the float baselines.

    python bench/deploy.py [--skip-parity] [--models deit_small_patch16_224 vit_base_patch16_224 shared]

Parity: the shared CIFAR-10 ViT at w8a8 (256 calibration images from train/), fake-quant PyTorch vs onnxruntime
INT8 on the full test set. Speed, in one process, best of N runs per engine: PyTorch FP32, PyTorch
``quantize_dynamic`` (fbgemm INT8 Linear), onnxruntime FP32 and onnxruntime INT8 (the vitq QDQ export at w8a8),
at batch 1 and 32. timm models use random weights (speed only), calibrated on 8 random images. Writes the
``deploy`` section of docs/results.md.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import vitq
from common import CIFAR_MODEL, load_cifar, logits_of, table, top1, write_section
from vitq.export import export_onnx, onnx_logits, onnx_session
from vitq.models import create_timm, load_model
from vitq.speed import compare_engines


def speed_rows(name: str, model, calib) -> list[list]:
    rows = []
    for r in compare_engines(model, "w8a8", calib=calib, show_progress=False):
        rows.append([name, r["batch"], r["engine"], r["ms"], r["images_per_s"], r["vs_ort_fp32"]])
        print(f"{name} batch {r['batch']}: {r['engine']} {r['ms']:.1f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--models", nargs="+", default=["deit_small_patch16_224", "vit_base_patch16_224", "shared"])
    args = ap.parse_args()
    torch.manual_seed(0)
    md = ["## Deployment: ONNX QDQ export and onnxruntime INT8 (CPU)", ""]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_parity:
            model, calib, images, labels = load_cifar(256)
            qm = vitq.quantize(model, "w8a8", calib=calib, show_progress=False)
            export_onnx(qm, tmp / "cifar-w8a8.onnx")
            session = onnx_session(tmp / "cifar-w8a8.onnx")
            fq, _ = logits_of(qm, images)
            ort = torch.cat([onnx_logits(session, images[i:i + 250]) for i in range(0, len(images), 250)])
            agree = 100.0 * (fq.argmax(-1) == ort.argmax(-1)).float().mean().item()
            md += ["`python bench/deploy.py`. Parity on the shared CIFAR-10 ViT at w8a8 (256 calibration images), "
                   f"full test set ({len(images)} images):", "",
                   table(["model", "top-1 (%)"], [["fake-quant PyTorch", top1(fq, labels)],
                                                  ["onnxruntime INT8 (QDQ export)", top1(ort, labels)]]),
                   "", f"Prediction agreement between the two: {agree:.2f}%; max |logit difference| "
                       f"{(fq - ort).abs().max().item():.4f}.", ""]
            print(md[-4], md[-2], flush=True)
        rows = []
        for name in args.models:
            if name == "shared":
                model = load_model(checkpoint=str(CIFAR_MODEL))
                calib = [torch.randn(8, 3, 32, 32)]
            else:
                model = create_timm(name).eval()
                calib = [torch.randn(8, 3, 224, 224)]
            rows += speed_rows(name, model, calib)
    md += [f"Speed: best of N runs, {torch.get_num_threads()} threads, this CPU (AVX2, no VNNI). 'x ort fp32' is "
           "the speed-up over onnxruntime FP32 at the same batch.", "",
           table(["model", "batch", "engine", "ms / batch", "images/s", "x ort fp32"], rows)]
    write_section("deploy", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
