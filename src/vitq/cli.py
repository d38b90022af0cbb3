"""The ``vitq`` command: quantize, analyze, export, bench, eval, info.

Every user error (unknown model, missing data, bad bits, incompatible checkpoint, existing output) ends in one line
on stderr and exit status 2, never a traceback, and leaves no partial output.
"""
from __future__ import annotations

import json
import logging
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

from .cli_parser import build_parser
from .errors import VitqError

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
