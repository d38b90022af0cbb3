"""The ``vitq`` command: quantize, analyze, export, bench, eval, info.

Every user error (unknown model, missing data, bad bits, incompatible checkpoint, existing output) ends in one line
on stderr and exit status 2, never a traceback, and leaves no partial output.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

from .errors import VitqError

EPILOG = """examples:
  vitq quantize                                   # embedded Fashion-MNIST ViT, w8a8, report on the test set
  vitq quantize --checkpoint m.safetensors --config m.json --data cifar10/ --preset w4a4 --out runs/w4a4
  vitq quantize --checkpoint m.safetensors --data cifar10/ --preset repq --w-bits 4 --a-bits 4 --calib-size 32
  vitq quantize --model deit_small_patch16_224 --pretrained --data imagenet/ --calib-size 256 --out runs/ds
  vitq quantize --checkpoint m.safetensors --data cifar10/ --preset best --budget w=4.5,a=4.5 --write-recipe mixed.yaml
  vitq analyze --checkpoint m.safetensors --data cifar10/ --preset w4a4 --out runs/w4a4-analysis
  vitq export runs/w8a8 --format onnx --out w8a8.onnx
  vitq eval runs/w4a4 --data cifar10/             # a saved quantized model
  vitq info runs/w4a4
"""


# ----- argument types: argparse reports a bad value as "usage ... error: argument --X: MESSAGE", exit 2 ----------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (batch size, calibration images, --limit)."""
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return n


def non_negative_int(text: str) -> int:
    """argparse type of counts where 0 is meaningful (--workers 0: load data in the main process)."""
    n = _int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, not {text!r}")
    return n


def seed_int(text: str) -> int:
    """argparse type of --seed: an integer torch can seed with (0 to 2**63 - 1)."""
    n = _int(text)
    if not 0 <= n < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**63 - 1, not {text!r}")
    return n


MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (their 'axis') need opset 13


def max_opset() -> int:
    """The newest opset that both the installed onnx and torch's TorchScript ONNX exporter (used by the export)
    support."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except ImportError:  # a private constant: without it, trust onnx alone
        return newest
    return min(newest, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)


def opset_arg(text: str) -> int:
    """argparse type of --opset: an opset the export can write (checked against the installed onnx/torch)."""
    n = _int(text)
    if not MIN_OPSET <= n <= max_opset():
        raise argparse.ArgumentTypeError(f"must be from {MIN_OPSET} to {max_opset()} (the QDQ export needs "
                                         f"{MIN_OPSET}+, the installed onnx/torch write up to {max_opset()}), "
                                         f"not {text!r}")
    return n


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (none given: the embedded Fashion-MNIST ViT)")
    g.add_argument("--model", help="timm model name (e.g. deit_small_patch16_224); with --checkpoint, its architecture")
    g.add_argument("--checkpoint", help="weights: .safetensors, .pth/.pt state dict, or a timm training checkpoint")
    g.add_argument("--config", help="model JSON config ({'cfg': {img_size, patch_size, ...}}); default: the "
                                    ".json beside --checkpoint")
    g.add_argument("--pretrained", action="store_true", help="download timm's pretrained weights (needs a network)")
    g.add_argument("--num-classes", type=positive_int, help="classifier size for a timm model (default: the model's)")


def _data_args(p: argparse.ArgumentParser, calib: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="ImageFolder root (ROOT/<split>/<class>/*) or Fashion-MNIST idx folder "
                                  "(default for the embedded model: /usr/share/datasets/fashion-mnist)")
    g.add_argument("--split", help="evaluation split (default: test if present, else val)")
    g.add_argument("--limit", type=positive_int, help="evaluate on this many images only (class-balanced)")
    g.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    g.add_argument("--workers", type=non_negative_int, default=0, help="data loader worker processes (default 0)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed for the calibration draw and any random "
                                                             "search (default 0)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    if calib:
        g.add_argument("--calib-split", default="train", help="calibration split (default train; when absent, "
                                                              "images held out of the evaluation split)")
        g.add_argument("--calib-data", help="another root to calibrate from (default: --data)")
        g.add_argument("--calib-size", type=positive_int, default=256,
                       help="number of calibration images (default 256)")


def _recipe_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recipe")
    g.add_argument("--preset", default="w8a8",
                   help="uniform min-max: w8a8 (default), w6a6, w4a8, w4a4, wXaY; published methods (W4A4 unless "
                        "--w-bits/--a-bits): repq, repq_faithful, ptq4vit, fqvit, smoothquant, best; with block "
                        "reconstruction (minutes, not seconds): best_recon, qdrop, brecq; FP8: fp8, fp8_tensor; "
                        "auto: fp8 on GPUs with FP8 tensor cores, else w8a8")
    g.add_argument("--recipe", help="YAML/JSON recipe file (overrides --preset)")
    g.add_argument("--w-bits", type=int, help="override weight bits (2-8)")
    g.add_argument("--a-bits", type=int, help="override activation bits (2-8)")
    g.add_argument("--qkv", choices=["split", "fused"], help="quantize Q, K, V separately (split, default) or "
                                                             "the fused qkv output as one tensor")


def budget_arg(text: str):
    """argparse type of --budget (see vitq.mixed.parse_budget)."""
    from .mixed import parse_budget

    try:
        return parse_budget(text)
    except VitqError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bits_list_arg(text: str) -> tuple[int, ...]:
    """argparse type of --bits: comma-separated candidate bit widths, each 2..8."""
    from .mixed import parse_candidates

    try:
        return parse_candidates(text)
    except VitqError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _mixed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mixed precision (a bit width per layer, chosen on the calibration images)")
    g.add_argument("--budget", type=budget_arg,
                   help="upper bounds, any combination: w=BITS (average weight bits), a=BITS (average activation "
                        "bits), size=BYTES (model size, e.g. 3.2MB); e.g. 'w=4.5,a=4.5'; a bare number sets w and a. "
                        "Each layer then gets the --bits width of the --preset/--recipe that loses the least KL "
                        "in total (exact integer program)")
    g.add_argument("--bits", type=bits_list_arg, help="candidate bit widths for --budget (default 3,4,6,8)")
    g.add_argument("--search-images", type=positive_int, default=64,
                   help="calibration images the --budget search measures sensitivity on (default 64)")
    g.add_argument("--write-recipe", metavar="PATH", help="also write the chosen mixed recipe as YAML (rerun it "
                                                          "with --recipe PATH)")


def _job_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """Flags of the commands that quantize a model on data and write a folder (quantize, analyze)."""
    _model_args(p)
    _data_args(p, calib=True)
    _recipe_args(p)
    _mixed_args(p)
    p.add_argument("--out", help=f"output folder (default {default_out})")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitq", description="Post-training quantization for Vision Transformers.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser("quantize", help="quantize a model, evaluate it next to float, save it and its report",
                       description="Convert, calibrate and freeze a model, evaluate it next to the float model, "
                                   "and write the quantized model, report.json and report.md to --out.")
    _job_args(q, "runs/<model>-<recipe>")

    e = sub.add_parser("eval", help="evaluate a float model or a saved quantized model",
                       description="Top-1/top-5 of a saved quantized model (QUANTIZED_DIR) or of a float model. "
                                   "With both, also agreement and KL of the quantized model vs the float one.")
    e.add_argument("quantized", nargs="?", help="folder written by 'vitq quantize --out'")
    _model_args(e)
    _data_args(e, calib=False)
    e.add_argument("--json", action="store_true", help="print the result as JSON")

    a = sub.add_parser("analyze", help="explain where the quantization error comes from (HTML report)",
                       description="Quantize a model and write report.html (plots embedded) and analysis.json: "
                                   "per-quantizer/layer/block error, block ablation, distributions, split vs fused "
                                   "QKV, double quantization, per-tensor vs per-channel vs per-token, and a "
                                   "sensitivity ranking of layers.")
    _job_args(a, "runs/<model>-<recipe>-analysis")
    a.set_defaults(limit=1000)
    a.add_argument("--probe-images", type=positive_int, default=128,
                   help="images used for tensor statistics and the sensitivity ranking (default 128)")

    x = sub.add_parser("export", help="export a saved quantized model to ONNX with QDQ nodes (onnxruntime INT8)",
                       description="Write a QDQ ONNX model (int8 weights per channel, 8-bit per-tensor activations) "
                                   "that onnx.checker accepts and onnxruntime runs with its INT8 kernels. Recipes "
                                   "without a standard INT8 kernel are refused, naming the quantizer.")
    x.add_argument("quantized", help="folder written by 'vitq quantize --out'")
    x.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    x.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    x.add_argument("--opset", type=opset_arg, default=17, help=f"ONNX opset, {MIN_OPSET} or newer (default 17)")
    x.add_argument("--force", action="store_true", help="replace an existing output file")

    b = sub.add_parser("bench", help="speed: CPU FP32/INT8 engines, or GPU bf16 vs FP8/INT8 kernels (--device cuda)",
                       description="On the CPU (default): time one model on PyTorch FP32, PyTorch quantize_dynamic "
                                   "(fbgemm INT8 Linear), onnxruntime FP32 and onnxruntime INT8 (vitq's QDQ export at "
                                   "the recipe), best of N runs in one process. With --device cuda: the float model "
                                   "in bf16 against vitq's FP8 (torch._scaled_mm) and INT8 (torch._int_mm) lowered "
                                   "models, torch.compile'd, median of CUDA-event timings. Calibrates on random "
                                   "images: speed only.")
    _model_args(b)
    _recipe_args(b)
    b.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    b.add_argument("--reps", type=positive_int, help="timed runs per engine (default 10 at batch <= 4, else 3)")
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--device", default="cpu", help="cpu (CPU engines, default) or cuda (GPU low-precision kernels)")
    b.add_argument("--no-compile", action="store_true", help="GPU: time eager models instead of torch.compile'd")

    i = sub.add_parser("info", help="summarize a model: layers, quantizers, bits",
                       description="Layers, parameters and quantizers (bits, granularity, state) of a saved "
                                   "quantized model (QUANTIZED_DIR) or of a float model converted with a recipe.")
    i.add_argument("quantized", nargs="?", help="folder written by 'vitq quantize --out'")
    _model_args(i)
    _recipe_args(i)
    return parser


# ----- helpers ---------------------------------------------------------------------------------------------------
@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """Silence the warnings logged while fetching weights (huggingface_hub/urllib3 retry messages: about 20 lines
    without a network), so a failed download ends in vitq's one-line error only; the network is still tried.

    ``logging.disable`` rather than logger levels: huggingface_hub resets its logger's level when it is first
    imported, which happens inside the load."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _load_float(args):
    from .models import load_model

    with _quiet_downloads() if args.pretrained else nullcontext():
        return load_model(args.model, args.checkpoint, args.config, args.pretrained, args.num_classes)


def _recipe(args):
    from dataclasses import replace

    from .config import QuantConfig
    from .recipes import preset

    if args.recipe:
        cfg = QuantConfig.from_file(args.recipe)
        if args.w_bits or args.a_bits:
            cfg = cfg.with_bits(args.w_bits, args.a_bits)
            cfg = replace(cfg, name=f"{cfg.name}:w{cfg.bits('weight')}a{cfg.bits('activation')}")
    else:
        name = args.preset
        if name == "auto":
            from .runtime.lower import recommended_preset

            name = recommended_preset(getattr(args, "device", None))
        cfg = preset(name, args.w_bits, args.a_bits)
    return replace(cfg, qkv=args.qkv) if args.qkv else cfg


def _check_bits(args) -> None:
    from .primitives import check_bits

    for flag in ("w_bits", "a_bits"):
        v = getattr(args, flag, None)
        if v is not None:
            try:
                check_bits(v)
            except VitqError as e:
                raise VitqError(f"--{flag.replace('_', '-')}: {e}") from None


def _device(name: str):
    """The torch device of --device: cpu, cuda or cuda:N, refused in one line if torch does not know it, it is
    another kind (tpu, mps, meta) or it is not present here."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise VitqError(f"--device {name}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise VitqError(f"--device {name}: vitq runs on cpu or cuda only")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VitqError(f"--device {name}: no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VitqError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


def _progress_off(args) -> bool:
    return args.quiet or not sys.stderr.isatty()


# ----- commands --------------------------------------------------------------------------------------------------
def _prepare_job(args, out_suffix: str = ""):
    """Everything a quantize/analyze run needs, checked before any heavy work: recipe, device, float model,
    output folder (refused if it exists without --force, if --force would replace something that is not an
    earlier run, or if it cannot be written) and loaders."""
    import torch

    from .models import model_name
    from .output import check_output
    from .pipeline import loaders

    _check_bits(args)
    _check_mixed(args)
    config = _recipe(args)
    device = _device(args.device)
    if args.out:  # before loading the model (maybe a download): a refused --out comes first
        check_output(args.out, args.force)
    if args.budget is not None:
        out_suffix = "-mixed" + out_suffix
    torch.manual_seed(args.seed)
    model = _load_float(args)
    default = f"{model_name(model)}-{config.name}{out_suffix}".replace(":", "-")
    out = Path(args.out) if args.out else check_output(Path("runs") / default, args.force)
    calib, val, info = loaders(model, args.data, args.split, args.calib_split, args.calib_data, args.calib_size,
                               args.limit, args.batch_size, args.workers, args.seed)
    return config, device, model, out, calib, val, info


def _check_mixed(args) -> None:
    """The mixed-precision flags, checked before any work."""
    if args.budget is None:
        for flag in ("bits", "write_recipe"):
            if getattr(args, flag, None) is not None:
                raise VitqError(f"--{flag.replace('_', '-')} needs --budget")
        return
    if args.w_bits or args.a_bits:
        raise VitqError("--budget chooses the bits of every layer: drop --w-bits/--a-bits")
    if args.write_recipe and Path(args.write_recipe).exists() and not args.force:
        raise VitqError(f"{args.write_recipe} exists (use --force to replace it)")


def _mixed_search(args, model, calib, device):
    """With --budget: the mixed recipe chosen on the calibration images, and the search's report."""
    from dataclasses import replace

    from .config import QuantConfig
    from .mixed import mixed_precision, write_recipe
    from .recipes import preset

    if args.recipe:
        recipe = QuantConfig.from_file(args.recipe)
        name, at = recipe.name, (lambda bits: recipe.with_bits(bits, bits))
    else:
        name = args.preset
        if name == "auto":
            from .runtime.lower import recommended_preset

            name = recommended_preset(getattr(args, "device", None))
        at = (lambda bits: preset(name, bits, bits))

    def base(bits: int) -> QuantConfig:
        cfg = at(bits)
        return replace(cfg, qkv=args.qkv) if args.qkv else cfg

    base.vitq_name = name
    config, report = mixed_precision(model, base, calib, args.budget, candidates=args.bits or (3, 4, 6, 8),
                                     probe_images=args.search_images, device=device,
                                     show_progress=not _progress_off(args))
    if args.write_recipe:
        write_recipe(config, args.write_recipe, report)
    layers = ", ".join(f"{n} at {b}" for b, n in report["layers_per_bits"].items() if n)
    size = f", {report['size_bytes'] / 1e6:.2f} MB"
    w, a = report["avg_w_bits"], report["avg_a_bits"]
    print(f"mixed precision ({args.budget}): {len(report['assignment'])} layers ({layers}); average weight bits "
          f"{w if w is None else round(w, 3)}, activation bits {a if a is None else round(a, 3)}{size}; "
          f"search {report['seconds']['total']:.0f} s"
          + (f"; wrote {args.write_recipe}" if args.write_recipe else ""))
    return config, report


def cmd_quantize(args) -> int:
    from .pipeline import quantize_and_report

    config, device, model, out, calib, val, info = _prepare_job(args)
    mixed = None
    if args.budget is not None:
        config, mixed = _mixed_search(args, model, calib, device)
    _, report = quantize_and_report(model, config, calib, val, info, out=out, force=args.force, device=device,
                                    seed=args.seed, show_progress=not _progress_off(args), mixed=mixed)
    print(f"{report['model']} {config.name} ({report['calib_images']} calibration / {report['eval_images']} "
          f"evaluation images): float top-1 {report['fp_top1']:.2f}%  quantized top-1 {report['q_top1']:.2f}%  "
          f"(agreement {report['agreement']:.2f}%, KL {report['kl']:.4f})")
    print(f"wrote {out}/ (model.safetensors, vitq.json, report.json, report.md)")
    return 0


def cmd_analyze(args) -> int:
    from .analysis import analyze

    config, device, model, out, calib, val, info = _prepare_job(args, "-analysis")
    if args.budget is not None:
        config, _ = _mixed_search(args, model, calib, device)
    a = analyze(model, config, calib, val, out=out, force=args.force, probe_images=args.probe_images,
                show_progress=not _progress_off(args), device=device,
                info={"data": info.data, "split": info.split, "calib_split": info.calib_split, "seed": args.seed})
    for line in a["advice"]:
        print(line)
    print(f"wrote {out}/report.html and analysis.json ({a['summary']['seconds']:.0f} s)")
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx
    from .output import atomic_file
    from .serialize import load

    out = Path(args.out)
    with atomic_file(out, args.force) as tmp:  # checks --out before loading; written whole, or not at all
        summary = export_onnx(load(args.quantized), tmp, opset=args.opset)
    ops = summary["ops"]
    print(f"wrote {out} ({summary['bytes'] / 1e6:.1f} MB, opset {args.opset}): {ops.get('QuantizeLinear', 0)} "
          f"QuantizeLinear, {ops.get('DequantizeLinear', 0)} DequantizeLinear, {summary['weights_as_int8']} int8 "
          f"weight tensors")
    return 0


def _print_rows(rows: list[dict], title: str, ratio_key: str, ratio_label: str) -> None:
    print(title)
    print(f"{'batch':>5s}  {'engine':24s} {'ms/batch':>10s} {'images/s':>10s} {ratio_label:>10s}")
    for r in rows:
        print(f"{r['batch']:5d}  {r['engine']:24s} {r['ms']:10.1f} {r['images_per_s']:10.1f} {r[ratio_key]:10.2f}")


def cmd_bench(args) -> int:
    from .models import model_name
    from .speed import compare_engines, compare_lowp_engines

    _check_bits(args)
    device = _device(args.device)
    model = _load_float(args)
    show = not _progress_off(args)
    if device.type == "cuda":
        rows = compare_lowp_engines(model, device, batch_sizes=args.batch_sizes, reps=args.reps or 10,
                                    compile=not args.no_compile, show_progress=show)
        title = f"{model_name(model)} on {torch_device_name(device)}, median of CUDA-event timings:"
        ratio = ("vs_float", "x float")
    else:
        config = _recipe(args)
        rows = compare_engines(model, config, batch_sizes=args.batch_sizes, reps=args.reps, show_progress=show)
        title = f"{model_name(model)}, {config.name}, best of N runs (ratios are what to compare):"
        ratio = ("vs_ort_fp32", "x ort fp32")
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_rows(rows, title, *ratio)
    return 0


def torch_device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .pipeline import eval_loader
    from .serialize import load

    device = _device(args.device)
    has_float = args.model or args.checkpoint
    qmodel = load(args.quantized) if args.quantized else None
    fmodel = _load_float(args) if (has_float or qmodel is None) else None
    model = qmodel if qmodel is not None else fmodel
    loader, root, split = eval_loader(model, args.data, args.split, args.limit, args.batch_size, args.workers)
    model.to(device)
    if qmodel is not None and fmodel is not None:
        fmodel.to(device)
        res = evaluate(qmodel, loader, float_model=fmodel, device=device, show_progress=not _progress_off(args))
    else:
        res = evaluate(model, loader, device=device, show_progress=not _progress_off(args))
    res.update(data=str(root), split=split, model=args.quantized or args.model or args.checkpoint or "default")
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        line = f"{res['model']} on {root}/{split} ({res['images']} images): top-1 {res['top1']:.2f}%  " \
               f"top-5 {res['top5']:.2f}%"
        if "fp_top1" in res:
            line += f"  | float top-1 {res['fp_top1']:.2f}%  agreement {res['agreement']:.2f}%  KL {res['kl']:.4f}"
        print(line)
    return 0


def cmd_info(args) -> int:
    from .convert import convert
    from .models import model_name
    from .report import describe
    from .serialize import load

    if args.quantized:
        model = load(args.quantized)
        title = f"{args.quantized} (frozen, recipe {model.vitq_config.name})"
    else:
        _check_bits(args)
        fmodel = _load_float(args)
        model = convert(fmodel, _recipe(args))
        title = f"{model_name(fmodel)} converted with {model.vitq_config.name} (not calibrated)"
    print("\n".join([title, *describe(model)]))
    return 0


COMMANDS = {"quantize": cmd_quantize, "analyze": cmd_analyze, "export": cmd_export, "bench": cmd_bench,
            "eval": cmd_eval, "info": cmd_info}


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except VitqError as e:
        print(f"vitq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vitq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
