"""The ``vitq`` command line: the argument parser, its subcommands and flags, and the argparse types that refuse
a bad value (with argparse's usage line and one error line, exit 2) before any work. The commands themselves are
in :mod:`vitq.cli`.
"""
from __future__ import annotations

import argparse

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
