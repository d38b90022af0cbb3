"""FP8 accuracy on the shared CIFAR-10 ViT: float vs the fp8 / fp8_tensor presets, fake-quant and lowered.

    python bench/fp8.py [--limit N]

The lowered models run every eligible layer on ``torch._scaled_mm`` (on this CPU: the same FP8 GEMM API as on
the GPU, slowly), so this checks the runtime's accuracy parity on real data where no GPU is needed. 128
calibration images from train/ (seed 0). Writes the ``fp8`` section of docs/results.md.
"""
from __future__ import annotations

import argparse

from common import load_cifar, logits_of, table, top1, write_section
import vitq
from vitq.runtime import lower


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, help="evaluate on every k-th test image, this many in all")
    ap.add_argument("--presets", nargs="+", default=["fp8"], help="fp8 and/or fp8_tensor (default fp8; the CPU "
                                                                      "runs tensor-wise FP8 GEMMs very slowly)")
    args = ap.parse_args()
    model, calib, images, labels = load_cifar(128)
    if args.limit:
        step = max(1, len(images) // args.limit)
        images, labels = images[::step][:args.limit], labels[::step][:args.limit]
    fp, _ = logits_of(model, images)
    rows = [["float", top1(fp, labels), "", ""]]
    print("float", rows[0][1], flush=True)
    for name in args.presets:
        qm = vitq.quantize(model, name, calib=calib, show_progress=False)
        fq, _ = logits_of(qm, images)
        lm, report = lower(qm, "cpu")
        lo, _ = logits_of(lm, images)
        agree = 100.0 * (fq.argmax(-1) == lo.argmax(-1)).float().mean().item()
        rows.append([f"{name} fake-quant", top1(fq, labels), "", ""])
        rows.append([f"{name} lowered ({len(report['fp8'])} layers on _scaled_mm)", top1(lo, labels), agree,
                     float((fq - lo).abs().max())])
        print(rows[-2:], flush=True)
    md = ["## FP8 parity on real data (#6)", "",
          f"`python bench/fp8.py`: shared CIFAR-10 ViT, {len(images)} test images, 128 calibration images. "
          "Lowered = `vitq.runtime.lower` (Fp8Linear / Fp8PatchConv on `torch._scaled_mm`, here on the CPU); the head "
          "(10 classes, not a multiple of 16) stays fake-quant.", "",
          table(["model", "top-1 (%)", "agreement with fake-quant (%)", "max logit diff"], rows)]
    write_section("fp8", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
