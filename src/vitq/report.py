"""Reports: what was quantized (coverage, so results stay comparable) and the report.json / report.md files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from torch import nn

from .convert import named_quantizers


def _bits(model: nn.Module, name: str) -> Optional[int]:
    for n, q in named_quantizers(model):
        if n == name:
            return q.spec.bits if q.enabled else None
    return None


def _any_enabled(model: nn.Module, suffix: str) -> Optional[int]:
    bits = {q.spec.bits for n, q in named_quantizers(model) if n.endswith(suffix) and q.enabled}
    return max(bits) if bits else None


def coverage(model: nn.Module) -> dict:
    """Which tensors are quantized and at what bits (None = float), the settings papers often leave unstated."""
    quantizers = list(named_quantizers(model))
    granularities = sorted({f"{q.spec.granularity.kind}" for n, q in quantizers if q.enabled and not q.is_weight})
    return {
        "patch_embed_input_bits": _bits(model, "patch_embed.proj.input_quantizer"),
        "patch_embed_weight_bits": _bits(model, "patch_embed.proj.weight_quantizer"),
        "head_input_bits": _bits(model, "head.input_quantizer"),
        "head_weight_bits": _bits(model, "head.weight_quantizer"),
        "qkv_split": any(n.endswith("attn.q_quantizer") and q.enabled for n, q in quantizers),
        "softmax_output_bits": _any_enabled(model, "matmul_av.a_quantizer"),
        "post_gelu_bits": _any_enabled(model, "mlp.fc2.input_quantizer"),
        "layernorm_quantized": False,
        "residual_add_quantized": False,
        "activation_granularities": granularities,
        "quantizers_enabled": sum(q.enabled for _, q in quantizers),
        "quantizers_total": len(quantizers),
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def write_report(out: Path, report: dict, title: str = "vitq quantization report") -> None:
    """``report.json`` (everything) and ``report.md`` (a readable summary) in the folder ``out``."""
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = [f"# {title}", ""]
    headline = [("model", "model"), ("recipe", "recipe"), ("weight bits", "w_bits"), ("activation bits", "a_bits"),
                ("calibration images", "calib_images"), ("evaluation images", "eval_images"),
                ("float top-1 (%)", "fp_top1"), ("quantized top-1 (%)", "q_top1"),
                ("float top-5 (%)", "fp_top5"), ("quantized top-5 (%)", "q_top5"),
                ("top-1 agreement with float (%)", "agreement"), ("mean KL(float || quantized)", "kl"),
                ("calibrate + freeze (s)", "seconds_calibrate"), ("evaluation (s)", "seconds_eval"),
                ("fake-quant / float throughput", "throughput_ratio")]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {label} | {_fmt(report[key])} |" for label, key in headline if key in report]
    if "coverage" in report:
        lines += ["", "## Coverage", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in report["coverage"].items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def describe(model: nn.Module) -> list[str]:
    """The lines of ``vitq info``: parameter count, quant layer kinds, and every enabled quantizer with its bits,
    symmetry, granularity, observer and state (quantizers left in float are counted, not listed)."""
    from .convert import quant_modules

    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if n.endswith("weight_int"))
    layers = list(quant_modules(model))
    kinds: dict[str, int] = {}
    for _, m in layers:
        kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
    lines = [f"parameters: {params:,}   quant layers: {len(layers)}   qkv: {model.vitq_config.qkv}",
             "layers: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())),
             f"{'quantizer':56s} {'bits':>4s} {'scheme':12s} {'sym':>5s} {'granularity':12s} {'observer':10s} state"]
    quantizers = list(named_quantizers(model))
    for name, q in quantizers:
        if q.enabled:
            s = q.spec
            state = q.state if q.state != "off" or not q.has_qparams else "off (qparams fixed)"
            lines.append(f"{name:56s} {s.bits:4d} {s.scheme:12s} {str(s.symmetric):>5s} {s.granularity.kind:12s} "
                         f"{s.observer:10s} {state}")
    off = sum(not q.enabled for _, q in quantizers)
    lines.append(f"({off} quantizers left in float not listed)")
    return lines
