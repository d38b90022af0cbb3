"""Uniform vs log2 vs log-sqrt2 quantization of the softmax output at w4a4 on the shared CIFAR-10 ViT.

    python bench/softmax.py

The w4a4 preset (256 calibration images from train/) with only ``*.matmul_av.a_quantizer`` changed; top-1 on the
full test set. Writes the ``softmax`` section of docs/results.md.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from common import load_cifar, logits_of, quantize, table, top1, write_section
from vitq import QuantRule, QuantSpec, preset


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    model, calib, images, labels = load_cifar(256)
    base = preset("w4a4")
    rows = []
    for scheme in ("uniform", "log2", "log_sqrt2"):
        spec = QuantSpec(4, symmetric=True, scheme=scheme)
        cfg = replace(base, rules=(QuantRule("*.matmul_av.a_quantizer", spec),) + base.rules, name=f"w4a4+{scheme}")
        qm, _ = quantize(model, cfg, calib)
        acc = top1(logits_of(qm, images)[0], labels)
        rows.append([scheme, acc])
        print(f"{scheme}: {acc:.2f}%", flush=True)
    md = ["## Softmax-output quantizer at w4a4", "",
          "`python bench/softmax.py`: the w4a4 preset with only the softmax-output quantizer changed (4 bits, at most "
          f"16 levels each), full test set ({len(images)} images).", "",
          table(["softmax quantizer", "top-1 (%)"], rows)]
    write_section("softmax", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
