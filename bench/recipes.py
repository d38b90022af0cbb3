"""Method presets on the shared CIFAR-10 ViT: top-1 on the full test set at several bit widths and calibration
sizes, calibration wall time, and a w4a4 ablation of the ``best`` recipe's components.

    python bench/recipes.py                 # the whole grid (long: about an hour on 2 CPU cores)
    python bench/recipes.py --retime        # re-measure the calibration wall time of every grid cell, alone
    python bench/recipes.py --where         # where best's w4a4 loss sits: each activation group back in float
    python bench/recipes.py --render        # rewrite docs/results.md and the plot from bench/out/recipes.jsonl

Results accumulate in ``bench/out/recipes.jsonl`` (one line per run, rerun rows are skipped), so an interrupted
run resumes. ``--retime`` repeats only the calibration of each grid cell (no evaluation) into
``bench/out/recipes_time.jsonl``; the tables report those times when present, so a grid run that shared the CPU
with other work still gets clean timings. Calibration images come from ``train/`` (seed 0); every row has the coverage of ``vitq.recipes``
(patch-embedding input at 8 bits, every weight and every Linear/matmul input at the row's bits).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional

import torch

from common import REPO, load_cifar, logits_of, table, top1, write_section
import vitq
from vitq import PerChannel, PerHead, QuantRule, QuantSpec, Transform
from vitq import recipes as R

OUT = Path(__file__).resolve().parent / "out" / "recipes.jsonl"
OUT_TIME = OUT.with_name("recipes_time.jsonl")
PLOT = REPO / "docs" / "recipes.png"
PRESETS = ["minmax", "smoothquant", "fqvit", "ptq4vit", "repq", "repq_faithful", "best"]
BITS = [(8, 8), (6, 6), (4, 8), (4, 4), (3, 3)]


def config_for(name: str, w: int, a: int):
    return vitq.preset(f"w{w}a{a}") if name == "minmax" else vitq.preset(name, w_bits=w, a_bits=a)


def ablation_configs(w: int = 4, a: int = 4) -> list[tuple[str, object]]:
    """The best recipe built up one component at a time: (label, config, or the grid key of the same run)."""
    pct = replace(R.repq(w, a), transforms=(), rules=R._rules(
        weight=QuantSpec(w, False, PerChannel(), observer="pct_search"),
        act=QuantSpec(a, False, observer="pct_search"), softmax=QuantSpec(a, True, observer="pct_search"),
        image=QuantSpec(8, False, observer="pct_search")))
    logsm = replace(pct, rules=(QuantRule("*.matmul_av.a_quantizer", QuantSpec(a, True, scheme="log_sqrt2",
                                                                              observer="pct_search")),) + pct.rules)
    rep = R.repq(w, a)
    twin = replace(rep, rules=(QuantRule("*.mlp.fc2.input_quantizer",
                                         QuantSpec(a, True, scheme="twin_uniform", observer="twin")),) + rep.rules)
    hess_inputs = replace(R.best(w, a), transforms=rep.transforms + (Transform("hessian"),))
    best = R.best(w, a)
    head_act = QuantSpec(a, False, PerHead(), observer="pct_search")
    per_head = replace(best, rules=(
        QuantRule("*.attn.[qkv]_quantizer", head_act),
        QuantRule("*.matmul_av.a_quantizer", QuantSpec(a, True, PerChannel(axis=1), scheme="log_sqrt2",
                                                       observer="pct_search"))) + best.rules)
    return [("min-max (the w4a4 preset)", f"minmax/w{w}a{a}/c32"), ("+ percentile-search scales", pct),
            ("+ log-sqrt2 softmax", logsm), ("+ RepQ reparameterization (= repq)", f"repq/w{w}a{a}/c32"),
            ("+ twin-uniform post-GELU", twin), ("+ Hessian-guided weight scales (= best)", f"best/w{w}a{a}/c32"),
            ("best, Hessian search on the inputs too", hess_inputs),
            ("best + per-head Q/K/V and softmax-output scales", per_head),
            ("best + GPTQ weight rounding (on the Hessian-searched grid)",
             replace(best, transforms=best.transforms + (Transform("gptq"),))),
            ("w3a3: best (twin-uniform softmax at 3 bits)", "best/w3a3/c32"),
            ("w3a3: best with the log-sqrt2 softmax of its w4a4 form", without_twin_softmax(R.best(3, 3)))]


def without_twin_softmax(cfg):
    """``best`` at 3 bits without the one component it adds there, the twin-uniform softmax rule, so the softmax
    falls back to its w4a4 (RepQ) rule. A test of that named preset component, not of a capability."""
    twin = [r for r in cfg.rules if r.pattern == "*.matmul_av.a_quantizer" and r.spec is not None
            and r.spec.scheme == "twin_uniform"]
    assert len(twin) == 1, f"{cfg.name} no longer adds exactly one twin-uniform softmax rule"
    return replace(cfg, rules=tuple(r for r in cfg.rules if r is not twin[0]))


def read_rows(path: Optional[Path] = None) -> list[dict]:
    path = path or OUT
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def done_keys(path: Optional[Path] = None) -> set:
    return {r["key"] for r in read_rows(path)}


def append_row(row: dict, path: Optional[Path] = None) -> None:
    path = path or OUT
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def run(model, calib, images, labels, key: str, config, extra: dict) -> None:
    t0 = time.perf_counter()
    qm = vitq.quantize(model, config, calib=calib, show_progress=False)
    secs = time.perf_counter() - t0
    acc = top1(logits_of(qm, images)[0], labels)
    append_row({"key": key, "top1": acc, "calib_seconds": secs, "images": len(images), **extra})
    print(f"{key}: {acc:.2f}% calib {secs:.1f}s", flush=True)


def grid(calib_sizes: list[int], bits: dict, presets: list[str], ablation: bool) -> None:
    done = done_keys()
    for n_calib in calib_sizes:
        model, calib, images, labels = load_cifar(n_calib)
        if "float" not in done:
            append_row({"key": "float", "top1": top1(logits_of(model, images)[0], labels), "images": len(images)})
            done.add("float")
        for w, a in bits.get(n_calib, bits[32]):
            for name in presets:
                key = f"{name}/w{w}a{a}/c{n_calib}"
                if key not in done:
                    run(model, calib, images, labels, key, config_for(name, w, a),
                        {"preset": name, "w": w, "a": a, "calib": n_calib})
        if ablation and n_calib == 32:
            for label, cfg in ablation_configs():
                key = f"ablation/{label}"
                if not isinstance(cfg, str) and key not in done:
                    run(model, calib, images, labels, key, cfg, {"ablation": label, "calib": n_calib})


# activation-quantizer groups of the shared coverage, for --where
WHERE_GROUPS = {"post-GELU (fc2 input)": ("*.mlp.fc2.input_quantizer",),
                "post-LayerNorm inputs (qkv, fc1)": ("*.attn.qkv.input_quantizer", "*.mlp.fc1.input_quantizer"),
                "attention output (proj input)": ("*.attn.proj.input_quantizer",),
                "Q, K, V": ("*.attn.[qkv]_quantizer",),
                "softmax output": ("*.matmul_av.a_quantizer",),
                "head input": ("head.input_quantizer",)}


def where(n_calib: int = 128, w: int = 4, a: int = 4) -> None:
    """Top-1 of ``best`` with one group of activation quantizers switched back to float at a time."""
    done = done_keys()
    model, calib, images, labels = load_cifar(n_calib)
    qm = vitq.quantize(model, config_for("best", w, a), calib=calib, show_progress=False)
    quantizers = [(n, q) for n, q in vitq.named_quantizers(qm) if q.enabled and not q.is_weight]
    for label, patterns in [("none (all quantized)", ())] + list(WHERE_GROUPS.items()):
        key = f"where/w{w}a{a}/c{n_calib}/{label}"
        if key in done:
            continue
        off = [q for n, q in quantizers if any(fnmatch(n, p) for p in patterns)]
        for q in off:
            q.disable()
        try:
            acc = top1(logits_of(qm, images)[0], labels)
        finally:
            for q in off:
                q.enable()
        append_row({"key": key, "top1": acc, "images": len(images), "group": label, "quantizers": len(off),
                    "calib": n_calib})
        print(f"{key}: {acc:.2f}%", flush=True)


def retime() -> None:
    """Repeat the calibration (convert, transforms, observer pass, freeze) of every grid cell, timing it alone."""
    done = done_keys(OUT_TIME)
    cells = [r for r in read_rows() if "preset" in r and r["key"] not in done]
    for n_calib in sorted({r["calib"] for r in cells}, reverse=True):  # 128 first: the 5-minute target
        model, calib, _, _ = load_cifar(n_calib, limit=1)
        for r in (r for r in cells if r["calib"] == n_calib):
            t0 = time.perf_counter()
            vitq.quantize(model, config_for(r["preset"], r["w"], r["a"]), calib=calib, show_progress=False)
            append_row({"key": r["key"], "calib_seconds": time.perf_counter() - t0}, OUT_TIME)
            print(f"{r['key']}: calib {time.perf_counter() - t0:.1f}s", flush=True)


def render() -> None:
    rows = read_rows()
    by_key = {r["key"]: r for r in rows}
    for t in read_rows(OUT_TIME):  # clean timings, where measured
        if t["key"] in by_key:
            by_key[t["key"]]["calib_seconds"] = t["calib_seconds"]
    fp = by_key["float"]["top1"]
    md = ["## Method presets (#5)", "",
          "`python bench/recipes.py`: shared CIFAR-10 ViT, top-1 (%) on the full test set "
          f"({by_key['float']['images']} images; float {fp:.2f}). Calibration images from `train/` (seed 0). "
          "Coverage of every row: patch-embedding input 8-bit, every weight (patch embedding and head included) at "
          "w bits, every Linear input, Q, K, V and the softmax output at a bits; LayerNorm, GELU, softmax and "
          "residual adds float. `minmax` is the plain wXaY preset. Calibration time is the wall time of "
          "`vitq.quantize` (convert, transforms, observer pass, freeze) on this 2-core CPU, re-measured alone by "
          "`python bench/recipes.py --retime` where the grid run shared the cores with other work. "
          "`not run`: not measured yet (the grid takes about 2 minutes per cell).", ""]
    for n_calib in (32, 128):
        present = [p for p in PRESETS if any(r.get("preset") == p and r.get("calib") == n_calib for r in rows)]
        if not present:
            continue
        header = ["preset"] + [f"w{w}a{a}" for w, a in BITS]
        cells = {p: [by_key.get(f"{p}/w{w}a{a}/c{n_calib}") for w, a in BITS] for p in present}
        acc = [[p] + [f"{r['top1']:.2f}" if r else "not run" for r in cells[p]] for p in present]
        secs = [[p] + [f"{r['calib_seconds']:.1f}" if r else "" for r in cells[p]] for p in present]
        md += [f"### {n_calib} calibration images", "", "Top-1 (%):", "", table(header, acc), "",
               "Calibration wall time (s):", "", table(header, secs), ""]
    abl = []
    for label, cfg in ablation_configs():
        r = by_key.get(cfg if isinstance(cfg, str) else f"ablation/{label}")
        if r:
            abl.append([label, f"{r['top1']:.2f}", f"{r['top1'] - fp:+.2f}"])
    where_rows = [r for r in rows if r["key"].startswith("where/")]
    if where_rows:
        base = next(r["top1"] for r in where_rows if not r["quantizers"])
        md += ["### Where `best` loses at w4a4 (128 calibration images)", "",
               "`python bench/recipes.py --where`: `best` at w4a4, then each group of activation quantizers "
               "switched back to float in turn (weights stay 4-bit; the w4a8 column above gives the weights' share).",
               "", table(["in float", "quantizers", "top-1 (%)", "recovered"],
                         [[r["group"], r["quantizers"], f"{r['top1']:.2f}", f"{r['top1'] - base:+.2f}"]
                          for r in where_rows]), ""]
    if abl:
        md += ["### Ablation (w4a4 unless the row says w3a3; 32 calibration images)", "",
               table(["recipe", "top-1 (%)", "vs float"], abl), ""]
    md.append("![top-1 per preset and bit width](recipes.png)")
    write_section("recipes", "\n".join(md))
    plot(rows, fp)
    print("\n".join(md))


def plot(rows: list[dict], fp: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    labels = [f"w{w}a{a}" for w, a in BITS]
    for ax, n_calib in zip(axes, (32, 128)):
        for p in PRESETS:
            ys = [next((r["top1"] for r in rows if r.get("key") == f"{p}/w{w}a{a}/c{n_calib}"), None)
                  for w, a in BITS]
            if any(y is not None for y in ys):
                ax.plot(labels, [float("nan") if y is None else y for y in ys], marker="o", label=p)
        ax.axhline(fp, color="k", ls="--", lw=1, label="float")
        ax.set_title(f"{n_calib} calibration images")
        ax.set_xlabel("bits")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (%)")
    axes[0].set_ylim(max(0, fp - 40), fp + 3)
    axes[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", action="store_true", help="only rewrite docs/results.md and the plot")
    ap.add_argument("--retime", action="store_true", help="re-measure the calibration time of every grid cell")
    ap.add_argument("--where", action="store_true", help="best's w4a4 loss per group of activation quantizers")
    ap.add_argument("--calib", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--bits", nargs="+", default=[f"w{w}a{a}" for w, a in BITS])
    ap.add_argument("--bits128", nargs="+", help="bit widths to run with 128 calibration images (default --bits)")
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--no-ablation", action="store_true")
    args = ap.parse_args()
    if args.retime or args.where:
        torch.manual_seed(0)
        if args.retime:
            retime()
        else:
            where()
    elif not args.render:
        torch.manual_seed(0)
        parse = lambda bs: [(int(b[1]), int(b[3])) for b in bs]  # noqa: E731
        bits = {32: parse(args.bits), 128: parse(args.bits128 or args.bits)}
        grid(args.calib, bits, args.presets, not args.no_ablation)
    render()


if __name__ == "__main__":
    main()
