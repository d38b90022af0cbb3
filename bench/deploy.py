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
import time
import warnings
from pathlib import Path

import torch

import vitq
from common import load_cifar, logits_of, table, top1, write_section
from vitq.export import export_float_onnx, export_onnx, onnx_logits, onnx_session
from vitq.models import create_timm, load_model


def best_time(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed_rows(name: str, model, calib, tmp: Path) -> list[list]:
    qm = vitq.quantize(model, "w8a8", calib=calib, show_progress=False)
    export_onnx(qm, tmp / f"{name}-int8.onnx")
    export_float_onnx(model, tmp / f"{name}-fp32.onnx")
    s_int8, s_fp32 = onnx_session(tmp / f"{name}-int8.onnx"), onnx_session(tmp / f"{name}-fp32.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    shape = calib[0].shape[1:]
    rows = []
    for batch in (1, 32):
        x = torch.randn(batch, *shape)
        reps = 10 if batch == 1 else 3
        with torch.no_grad():
            t = {"torch fp32": best_time(lambda: model(x), reps),
                 "torch quantize_dynamic": best_time(lambda: dyn(x), reps),
                 "ort fp32": best_time(lambda: onnx_logits(s_fp32, x), reps),
                 "ort int8 (vitq QDQ)": best_time(lambda: onnx_logits(s_int8, x), reps)}
        base = t["ort fp32"]
        for engine, sec in t.items():
            rows.append([name, batch, engine, 1000 * sec, batch / sec, base / sec])
        print(f"{name} batch {batch}: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in t.items()), flush=True)
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
                model = load_model(checkpoint=str(Path(__file__).resolve().parents[2] / "shared" / "models" /
                                                  "cifar10_vit_tiny" / "cifar10_vit_tiny.safetensors"))
                calib = [torch.randn(8, 3, 32, 32)]
            else:
                model = create_timm(name).eval()
                calib = [torch.randn(8, 3, 224, 224)]
            rows += speed_rows(name, model, calib, tmp)
    md += [f"Speed: best of N runs, {torch.get_num_threads()} threads, this CPU (AVX2, no VNNI). 'x ort fp32' is "
           "the speed-up over onnxruntime FP32 at the same batch.", "",
           table(["model", "batch", "engine", "ms / batch", "images/s", "x ort fp32"], rows)]
    write_section("deploy", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
