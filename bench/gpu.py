"""GPU speed and parity of the low-precision runtime: ViT-B/16 at batch 256, bf16 vs FP8 vs INT8 Linear layers.

    python bench/gpu.py --out gpu.json           # on a CUDA machine (H100/H200 class for FP8)
    python bench/gpu.py --render gpu.json        # write the "gpu" section of docs/results.md from that file

Random-init ``vit_base_patch16_224`` (speed does not depend on the weights), calibrated on 64 random images.
Engines, each timed by ``vitq.speed.compare_lowp_engines`` (CUDA events, median of ``--reps`` runs after
warm-up, every compile from a fresh ``torch._dynamo``), in one process:

* ``bf16``: the float model in bfloat16 (timm's fused SDPA attention), eager, ``torch.compile``d and compiled with
  CUDA graphs;
* ``fp8``: the ``fp8`` preset lowered by ``vitq.runtime.lower``: every Linear an Fp8Linear (``torch._scaled_mm``,
  static per-tensor input scale, per-row weight scales), the rest bf16, eager and compiled; ``fp8_tensor``: the
  same with per-tensor weight scales (tensor-wise scaled GEMM), compiled, with and without CUDA graphs;
* ``int8``: 8-bit uniform Linear layers (per-channel weights, per-tensor inputs; attention bf16) lowered to
  Int8Linear (``torch._int_mm``), compiled.

Parity: the lowered FP8 model against the fake-quant FP8 model (fp32) on 256 random images: top-1 agreement and
the largest logit difference; and the bf16 float model against fp32, the same measures, as the yardstick.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vitq.speed import compare_lowp_engines, int8_linear_recipe

# the timed (engine, mode) runs, in table order; engine "float" is the bf16 model
EAGER_RUNS = [("float", "eager"), ("fp8", "eager")]
COMPILED_RUNS = [("float", "compiled"), ("fp8", "compiled"), ("fp8_tensor", "compiled"), ("int8", "compiled"),
                 ("float", "compiled+graphs"), ("fp8_tensor", "compiled+graphs")]


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float(), b.float()
    return {"top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean() * 100),
            "max_logit_diff": float((a - b).abs().max()), "logit_scale": float(a.abs().max())}


def label(row: dict) -> str:
    """The table's name of a ``compare_lowp_engines`` row: ``bf16 eager``, ``fp8_tensor compiled+graphs``..."""
    return f"{'bf16' if row['name'] == 'float' else row['name']} {row['mode']}"


def measure(batch: int, reps: int, compile_: bool, profile: bool = False) -> dict:
    import timm

    import vitq
    from vitq.runtime import kernel_support, lower, recommended_preset

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", num_classes=1000).eval().to(dev)
    calib = [torch.randn(64, 3, 224, 224, device=dev)]
    x = torch.randn(batch, 3, 224, 224, device=dev)
    res = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
           "torch": torch.__version__, "batch": batch, "support": kernel_support(dev),
           "recommended_preset": recommended_preset(dev), "ms": {}}

    t0 = time.perf_counter()
    q_fp8 = vitq.quantize(model, "fp8", calib=calib, device=dev, show_progress=False)
    res["fp8_calibrate_s"] = time.perf_counter() - t0
    l_fp8, rep = lower(q_fp8, dev)
    res["fp8_layers"], res["fp8_kept"] = len(rep["fp8"]), rep["kept"]
    q_fp8t = vitq.quantize(model, "fp8_tensor", calib=calib, device=dev, show_progress=False)
    l_fp8t, rep_t = lower(q_fp8t, dev)
    res["fp8_tensor_layers"] = len(rep_t["fp8"])
    q_int8 = vitq.quantize(model, int8_linear_recipe(), calib=calib, device=dev, show_progress=False)
    l_int8, rep8 = lower(q_int8, dev, kernels=("int8",))
    res["int8_layers"], res["int8_kept"] = len(rep8["int8"]), rep8["kept"]

    # parity on the same images (fp32 references)
    with torch.no_grad():
        ref32 = model(x)
        fq = q_fp8(x)
        fqt = q_fp8t(x)
        bf = model.to(torch.bfloat16)(x.bfloat16())
        lo = l_fp8.to(torch.bfloat16)(x.bfloat16())
        lot = l_fp8t.to(torch.bfloat16)(x.bfloat16())
    res["parity_fp8_lowered_vs_fakequant"] = agreement(fq, lo)
    res["parity_bf16_vs_fp32"] = agreement(ref32, bf)
    res["parity_fp8_fakequant_vs_fp32"] = agreement(ref32, fq)
    res["parity_fp8_tensor_lowered_vs_fakequant"] = agreement(fqt, lot)
    del q_fp8, q_int8, q_fp8t
    torch.cuda.empty_cache()

    rows = compare_lowp_engines(model, dev, batch_sizes=(batch,), reps=reps, show_progress=False,
                                engines={"fp8": l_fp8, "fp8_tensor": l_fp8t, "int8": l_int8},
                                runs=EAGER_RUNS + (COMPILED_RUNS if compile_ else []))
    for r in rows:
        res["ms"][label(r)] = r["ms"]
        if r["mode"] != "eager":
            res.setdefault("compile_s", {})[label(r)] = r["first_call_s"]
        print(label(r), r["ms"], flush=True)
    if compile_ and profile:
        from torch.profiler import ProfilerActivity, profile as prof

        xb = x.bfloat16()
        for name, m in {"bf16": model, "fp8_tensor": l_fp8t}.items():
            torch._dynamo.reset()
            cm = torch.compile(m)
            with torch.no_grad():
                cm(xb)
                torch.cuda.synchronize()
                with prof(activities=[ProfilerActivity.CUDA]) as p:
                    cm(xb)
                    torch.cuda.synchronize()
            print(f"== {name} compiled: CUDA kernels by total time")
            print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
    base = res["ms"].get("bf16 compiled", res["ms"]["bf16 eager"])
    res["images_per_s"] = {k: batch / v * 1000 for k, v in res["ms"].items()}
    res["speedup_vs_bf16_compiled"] = {k: base / v for k, v in res["ms"].items()}
    return res


def render(path: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import table, write_section

    r = json.loads(Path(path).read_text())
    rows = [[k, f"{v:.1f}", f"{r['images_per_s'][k]:.0f}", f"{r['speedup_vs_bf16_compiled'][k]:.2f}x"]
            for k, v in r["ms"].items()]
    p1, p2, p3 = (r["parity_fp8_lowered_vs_fakequant"], r["parity_bf16_vs_fp32"],
                  r["parity_fp8_fakequant_vs_fp32"])
    md = ["## GPU runtime (#6)", "",
          f"`python bench/gpu.py` on one {r['device']} (sm {r['capability'][0]}{r['capability'][1]}, torch "
          f"{r['torch']}): random-init ViT-B/16, batch {r['batch']}, median of CUDA-event timings, one process. "
          f"`vitq.runtime.recommended_preset` picks `{r['recommended_preset']}` on this GPU. FP8: "
          f"{r['fp8_layers']} Linear layers on `torch._scaled_mm` (kept: {len(r['fp8_kept'])}); INT8: "
          f"{r['int8_layers']} on `torch._int_mm`. Attention runs in bf16 (SDPA) in every engine.", "",
          table(["engine", "ms / batch", "images/s", "vs bf16 compiled"], rows), "",
          "Parity on 256 random images (top-1 agreement %, max logit difference, largest logit):", "",
          table(["pair", "agreement", "max diff", "logit scale"],
                [["FP8 lowered (bf16) vs FP8 fake-quant (fp32)", f"{p1['top1_agreement']:.2f}",
                  f"{p1['max_logit_diff']:.3f}", f"{p1['logit_scale']:.2f}"],
                 ["FP8 fake-quant vs float fp32", f"{p3['top1_agreement']:.2f}", f"{p3['max_logit_diff']:.3f}",
                  f"{p3['logit_scale']:.2f}"],
                 ["float bf16 vs float fp32 (yardstick)", f"{p2['top1_agreement']:.2f}",
                  f"{p2['max_logit_diff']:.3f}", f"{p2['logit_scale']:.2f}"]])]
    write_section("gpu", "\n".join(md))
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--render", metavar="JSON")
    ap.add_argument("--profile", action="store_true", help="also print the top CUDA kernels of the compiled models")
    args = ap.parse_args()
    if args.render:
        render(args.render)
        return
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU")
    res = measure(args.batch, args.reps, not args.no_compile, args.profile)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
