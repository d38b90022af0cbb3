"""Block reconstruction on the shared CIFAR-10 ViT: top-1 on the full test set with and without the
``reconstruct`` transform, its wall time and peak memory, and an ablation of its components.

    python bench/reconstruct.py                  # the headline rows (best vs best_recon at w4a4, w3a3, w2a4)
    python bench/reconstruct.py --ablation       # rounding only, step sizes only, QDrop off, Fisher, layer-wise
    python bench/reconstruct.py --render         # rewrite docs/results.md and the plot from the jsonl

Rows accumulate in ``bench/out/reconstruct.jsonl`` (a rerun skips rows already there), so an interrupted run
resumes. Calibration images come from ``train/`` (seed 0). Each row runs in a fresh process state: the model is
reloaded and the peak resident memory is read from the OS after the row (a process-wide peak, so it is an upper
bound for the row).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import REPO, load_cifar, logits_of, table, top1, write_section
import vitq
from vitq import Transform

OUT = Path(__file__).resolve().parent / "out" / "reconstruct.jsonl"
PLOT = REPO / "docs" / "reconstruct.png"
HEADLINE = [("best", 4, 4), ("best_recon", 4, 4), ("best", 3, 3), ("best_recon", 3, 3), ("best", 2, 4),
            ("best_recon", 2, 4)]
# label -> reconstruct arguments, applied on top of best at the given bits (None: best without reconstruction)
ABLATION = {
    "none (best alone)": None,
    "rounding + step sizes + QDrop (default)": {},
    "rounding only": {"step_sizes": False},
    "step sizes only": {"weight_rounding": False},
    "without QDrop (BRECQ)": {"drop_prob": 0.0},
    "Fisher-weighted loss": {"loss": "fisher"},
    "layer by layer": {"granularity": "layer"},
}


def config_for(preset: str, w: int, a: int, recon_args: dict | None = None):
    cfg = vitq.preset(preset, w_bits=w, a_bits=a)
    if recon_args is not None:
        base = vitq.preset("best", w_bits=w, a_bits=a)
        cfg = replace(base, transforms=base.transforms + (Transform("reconstruct", tuple(sorted(recon_args.items()))),),
                      name=f"best+reconstruct{json.dumps(recon_args, sort_keys=True)}-w{w}a{a}")
    return cfg


def done_keys() -> set:
    if not OUT.exists():
        return set()
    return {json.loads(line)["key"] for line in OUT.read_text().splitlines() if line.strip()}


def run_row(key: str, cfg, calib_size: int, limit: int | None, extra: dict) -> None:
    model, calib, images, labels = load_cifar(calib_size=calib_size, limit=limit)
    fp_logits, _ = logits_of(model, images)
    t0 = time.perf_counter()
    qm = vitq.quantize(model, cfg, calib=calib, show_progress=False)
    seconds = time.perf_counter() - t0
    q_logits, _ = logits_of(qm, images)
    row = {"key": key, "recipe": cfg.name, "calib": calib_size, "eval_images": len(labels),
           "fp_top1": top1(fp_logits, labels), "q_top1": top1(q_logits, labels),
           "agreement": 100.0 * (fp_logits.argmax(-1) == q_logits.argmax(-1)).float().mean().item(),
           "seconds_quantize": seconds, "seconds_steps": qm.vitq_calibration["seconds"],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}
    OUT.parent.mkdir(exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def rows() -> list[dict]:
    return [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()] if OUT.exists() else []


def render() -> None:
    data = rows()
    if not data:
        raise SystemExit(f"no rows in {OUT}")
    head = [r for r in data if r.get("kind") == "headline"]
    abl = [r for r in data if r.get("kind") == "ablation"]
    fp = head[0]["fp_top1"] if head else data[0]["fp_top1"]
    md = ["## Block reconstruction (`python bench/reconstruct.py`)", "",
          f"Shared CIFAR-10 ViT (float {fp:.2f}%), full 10,000-image test set unless stated, calibration images "
          "from `train/` (seed 0). `best_recon` is `best` followed by the `reconstruct` transform with its "
          "defaults (200 Adam steps per unit, batch 32, AdaRound rounding, LSQ step sizes, QDrop 0.5). Time: the "
          "whole quantize call (calibration, reconstruction, freeze) on this 2-core CPU; `reconstruct` alone in "
          "its own column. Peak: the process's peak resident memory.", ""]
    if head:
        md.append(table(["recipe", "bits", "calib images", "top-1", "vs float", "agreement", "quantize (s)",
                         "reconstruct (s)", "peak RSS (MB)"],
                        [[r["preset"], f"w{r['w']}a{r['a']}", r["calib"], r["q_top1"], r["q_top1"] - r["fp_top1"],
                          r["agreement"], r["seconds_quantize"], r["seconds_steps"].get("reconstruct", 0.0),
                          r["peak_rss_mb"]] for r in head]))
    if abl:
        md += ["", f"Ablation ({abl[0]['eval_images']} test images, {abl[0]['calib']} calibration images, "
               "`best` + `reconstruct` with one setting changed):", ""]
        md.append(table(["variant", "bits", "top-1", "vs float", "reconstruct (s)"],
                        [[r["label"], f"w{r['w']}a{r['a']}", r["q_top1"], r["q_top1"] - r["fp_top1"],
                          r["seconds_steps"].get("reconstruct", 0.0)] for r in abl]))
    write_section("reconstruct", "\n".join(md))
    _plot(head)


def _plot(head: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not head:
        return
    labels = sorted({f"w{r['w']}a{r['a']}" for r in head}, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, preset in enumerate(("best", "best_recon")):
        vals = {f"w{r['w']}a{r['a']}": r["q_top1"] for r in head if r["preset"] == preset}
        xs = [j + 0.2 * (2 * i - 1) for j, lab in enumerate(labels) if lab in vals]
        ax.bar(xs, [vals[lab] for lab in labels if lab in vals], width=0.4, label=preset)
    ax.axhline(head[0]["fp_top1"], color="k", linestyle="--", linewidth=1, label="float")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(bottom=max(0.0, min(r["q_top1"] for r in head) - 5))
    ax.legend(loc="lower left")
    ax.set_title("best vs best + block reconstruction (CIFAR-10 ViT)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ablation", action="store_true", help="run the ablation rows instead of the headline")
    ap.add_argument("--render", action="store_true", help="only rewrite docs/results.md and the plot")
    ap.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")
    ap.add_argument("--limit", type=int, help="test images (default: all 10,000)")
    ap.add_argument("--bits", nargs="+", default=None, help="ablation bits, e.g. w3a3 (default w3a3)")
    args = ap.parse_args()
    if not args.render:
        torch.manual_seed(0)
        done = done_keys()
        if args.ablation:
            for bits in args.bits or ["w3a3"]:
                w, a = int(bits[1]), int(bits[3])
                for label, rargs in ABLATION.items():
                    key = f"ablation|{label}|w{w}a{a}|{args.calib}|{args.limit}"
                    if key not in done:
                        run_row(key, config_for("best", w, a, rargs), args.calib, args.limit,
                                {"kind": "ablation", "label": label, "w": w, "a": a})
        else:
            for preset, w, a in HEADLINE:
                key = f"headline|{preset}|w{w}a{a}|{args.calib}|{args.limit}"
                if key not in done:
                    run_row(key, config_for(preset, w, a), args.calib, args.limit,
                            {"kind": "headline", "preset": preset, "w": w, "a": a})
    render()


if __name__ == "__main__":
    main()
