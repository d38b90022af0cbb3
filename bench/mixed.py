"""Mixed precision on the shared CIFAR-10 ViT: uniform W3A3, W4A4, W6A6 of ``best`` against ``best`` mixed at
average 3.5, 4.0, 4.5 and 5.0 bits (weights and activations, ``vitq.mixed_precision`` with candidates 3, 4, 6, 8),
top-1 on the full test set and the search time.

    python bench/mixed.py                   # the whole grid (long; a GPU helps: --device cuda)
    python bench/mixed.py --render          # rewrite section "mixed" of docs/results.md and docs/mixed.png
    python bench/mixed.py --limit 200 --calib 16 --out /tmp/mixed.jsonl --no-render   # smoke run

Rows accumulate in ``bench/out/mixed.jsonl`` (one line per run; rows already there are skipped), so an
interrupted run resumes. The search measures sensitivity on the calibration images only (train split, seed 0);
the test set is used for the top-1 alone.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import REPO, load_cifar, logits_of, table, top1, write_section
import vitq

OUT = Path(__file__).resolve().parent / "out" / "mixed.jsonl"
PLOT = REPO / "docs" / "mixed.png"
UNIFORM = [3, 4, 6]
BUDGETS = [3.5, 4.0, 4.5, 5.0]
CANDIDATES = (3, 4, 6, 8)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_row(row: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def grid(args) -> None:
    out = Path(args.out)
    done = {r["key"] for r in read_rows(out)}
    device = torch.device(args.device)
    model, calib, images, labels = load_cifar(calib_size=args.calib, limit=args.limit)
    model.to(device)
    images, labels = images.to(device), labels.to(device)
    calib = [x.to(device) for x in calib]
    suffix = f"-c{args.calib}" + (f"-l{args.limit}" if args.limit else "")
    if "float" + suffix not in done:
        logits, _ = logits_of(model, images)
        append_row({"key": "float" + suffix, "kind": "float", "top1": top1(logits.cpu(), labels.cpu())}, out)
    for b in UNIFORM:
        key = f"uniform-w{b}a{b}{suffix}"
        if key in done:
            continue
        t0 = time.perf_counter()
        qm = vitq.quantize(model, vitq.preset("best", b, b), calib=calib, device=device, show_progress=False)
        seconds = time.perf_counter() - t0
        logits, _ = logits_of(qm, images)
        append_row({"key": key, "kind": "uniform", "bits": b, "avg_w_bits": float(b), "avg_a_bits": float(b),
                    "top1": top1(logits.cpu(), labels.cpu()), "seconds_quantize": seconds,
                    "calib": args.calib, "eval_images": len(labels)}, out)
        print(key, "done")
    measured = None  # the sensitivity pass does not depend on the budget: measure once, allocate per budget
    for budget in BUDGETS:
        key = f"mixed-{budget:g}{suffix}"
        if key in done:
            continue
        cfg, rep = vitq.mixed_precision(model, "best", calib, {"w": budget, "a": budget}, candidates=CANDIDATES,
                                        probe_images=min(args.calib, 64), device=device, show_progress=False,
                                        sensitivity=measured)
        if measured is None:
            measured, seconds_sensitivity = rep["sensitivity"], rep["seconds"]["sensitivity"]
        rep["seconds"]["total"] += seconds_sensitivity if rep["seconds"]["sensitivity"] < seconds_sensitivity \
            else 0.0  # report the search time as if measured for this budget alone
        t0 = time.perf_counter()
        qm = vitq.quantize(model, cfg, calib=calib, device=device, show_progress=False)
        seconds = time.perf_counter() - t0
        logits, _ = logits_of(qm, images)
        append_row({"key": key, "kind": "mixed", "budget": budget, "avg_w_bits": rep["avg_w_bits"],
                    "avg_a_bits": rep["avg_a_bits"], "size_bytes": rep["size_bytes"],
                    "layers_per_bits": rep["layers_per_bits"], "predicted_kl": rep["predicted_kl"],
                    "measured_kl": rep.get("measured_kl"), "top1": top1(logits.cpu(), labels.cpu()),
                    "seconds_search": rep["seconds"]["total"], "seconds_quantize": seconds,
                    "calib": args.calib, "eval_images": len(labels), "assignment": rep["assignment"]}, out)
        print(key, "done")


def render(path: Path) -> None:
    rows = [r for r in read_rows(path) if r["kind"] != "float"]
    if not rows:
        raise SystemExit(f"no rows in {path}")
    fp = next((r["top1"] for r in read_rows(path) if r["kind"] == "float"), float("nan"))
    body = [[r["kind"], f"W{r['bits']}A{r['bits']}" if r["kind"] == "uniform" else f"<= {r['budget']:g}",
             r["avg_w_bits"], r["avg_a_bits"], r["top1"], r.get("seconds_search", 0.0)] for r in rows]
    md = (f"### Mixed precision (`best`, candidates {', '.join(map(str, CANDIDATES))})\n\n"
          f"Float top-1 {fp:.2f}%. Mixed rows: `vitq.mixed_precision(model, 'best', calib, w=a=budget)`, "
          "sensitivity on the calibration images, exact integer-program allocation.\n\n"
          + table(["kind", "budget", "avg W bits", "avg A bits", "top-1 (%)", "search (s)"], body)
          + "\n\n![mixed precision](mixed.png)")
    write_section("mixed", md)
    plot(rows, fp)


def plot(rows: list[dict], fp: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for kind, marker in (("uniform", "o"), ("mixed", "s")):
        pts = sorted((0.5 * (r["avg_w_bits"] + r["avg_a_bits"]), r["top1"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=f"best, {kind}")
    ax.axhline(fp, color="gray", ls="--", lw=1, label="float")
    ax.set_xlabel("average bits (weights and activations)")
    ax.set_ylabel("top-1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", action="store_true", help="only rewrite docs/results.md and docs/mixed.png")
    ap.add_argument("--no-render", action="store_true", help="run only, do not touch docs/ (smoke runs)")
    ap.add_argument("--calib", type=int, default=128, help="calibration images (default 128)")
    ap.add_argument("--limit", type=int, help="evaluate on the first N test images only (smoke runs)")
    ap.add_argument("--out", default=str(OUT), help=f"results file (default {OUT})")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if not args.render:
        grid(args)
    if not args.no_render:
        render(Path(args.out))


if __name__ == "__main__":
    main()
