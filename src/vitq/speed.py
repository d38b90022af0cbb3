"""Inference speed of one model on the engines that matter for deployment, measured in one process.

CPU (:func:`compare_engines`): PyTorch FP32, PyTorch ``quantize_dynamic`` (fbgemm INT8 Linear), onnxruntime FP32
(the float model exported to ONNX) and onnxruntime INT8 (the vitq QDQ export of the quantized model), each the best
of N runs after a warm-up, so the ratios between engines are what to read (timings on a shared CPU are noisy).

GPU (:func:`compare_lowp_engines`): the float model in bf16 against the model lowered by ``vitq.runtime.lower``
onto FP8 (``torch._scaled_mm``) and INT8 (``torch._int_mm``) Linear layers, eager, ``torch.compile``d or compiled
with CUDA graphs, each the median of CUDA-event timings.
"""
from __future__ import annotations

import copy
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from .config import QuantConfig, QuantRule
from .errors import VitqError
from .pipeline import quantize
from .recipes import preset
from .export.onnx import export_float_onnx, export_onnx, input_shape, onnx_logits, onnx_session
from .progress import progress


def best_time(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def compare_engines(model: nn.Module, config="w8a8", calib: Optional[list] = None,
                    batch_sizes: Iterable[int] = (1, 32), reps: Optional[int] = None,
                    show_progress: bool = True) -> list[dict]:
    """Rows ``{batch, engine, ms, images_per_s, vs_ort_fp32}`` for each batch size and engine.

    ``calib`` defaults to 8 random images: enough to build the INT8 graph for a speed measurement, not for accuracy.
    """
    model = model.eval()
    shape = input_shape(model)
    calib = calib if calib is not None else [torch.randn(8, *shape)]
    qmodel = quantize(model, config, calib=calib, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(qmodel, Path(tmp) / "int8.onnx")
        export_float_onnx(model, Path(tmp) / "fp32.onnx")
        s_int8, s_fp32 = onnx_session(Path(tmp) / "int8.onnx"), onnx_session(Path(tmp) / "fp32.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    engines = {"torch fp32": model, "torch quantize_dynamic": dynamic,
               "ort fp32": lambda x: onnx_logits(s_fp32, x), "ort int8 (vitq QDQ)": lambda x: onnx_logits(s_int8, x)}
    rows = []
    for batch in progress(list(batch_sizes), desc="bench", disable=not show_progress):
        x = torch.randn(batch, *shape)
        n = reps or (10 if batch <= 4 else 3)
        times = {name: best_time(lambda f=f: f(x), n) for name, f in engines.items()}
        for name, sec in times.items():
            rows.append({"batch": batch, "engine": name, "ms": 1000 * sec, "images_per_s": batch / sec,
                         "vs_ort_fp32": times["ort fp32"] / sec})
    return rows


def median_time(fn, x: torch.Tensor, reps: int) -> float:
    """Median seconds of ``fn(x)`` over ``reps`` runs after 3 warm-up runs (CUDA events on a CUDA tensor)."""
    cuda = x.is_cuda
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        times = []
        for _ in range(reps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def int8_linear_recipe() -> QuantConfig:
    """w8a8 on the Linear layers only (attention and patch embedding float): what Int8Linear runs end to end."""
    base = preset("w8a8")
    return replace(base, rules=(QuantRule("*[qkv]_quantizer", None), QuantRule("*.matmul_*", None)) + base.rules,
                   exclude=("patch_embed",), name="w8a8_linear")


LOWP_MODES = {"eager": None, "compiled": "default", "compiled+graphs": "reduce-overhead"}
"""How :func:`compare_lowp_engines` can run an engine: as is, ``torch.compile``d, or compiled with CUDA graphs."""


def compare_lowp_engines(model: nn.Module, device="cuda", batch_sizes: Iterable[int] = (256,), reps: int = 10,
                         compile: bool = True, calib: Optional[list] = None, show_progress: bool = True,
                         engines: Optional[dict] = None,
                         runs: Optional[Iterable[tuple[str, str]]] = None) -> list[dict]:
    """Rows ``{batch, engine, name, mode, ms, images_per_s, vs_float, first_call_s}``: float (bf16 on CUDA, fp32 on
    the CPU), FP8 and INT8.

    ``engines`` maps an engine name to a recipe (a preset name or QuantConfig, quantized on ``calib`` and lowered
    by ``vitq.runtime.lower``) or to a module already built (e.g. a lowered model the caller also checks for
    parity; it is moved and cast in place); default ``{"fp8": "fp8_tensor", "int8": int8_linear_recipe()}``. The
    float model (a copy) is always the engine ``float``. ``runs`` lists the ``(engine name, mode)`` pairs to time,
    in order, a mode of :data:`LOWP_MODES`; default: every engine ``compiled`` (``eager`` with ``compile=False``).
    Every compiled run starts from ``torch._dynamo.reset()``, so its compile is timed alone
    (``first_call_s``, the first call) and no run reaches Dynamo's recompile limit.

    A row's ``engine`` is the engine name for an eager run, else ``"<name> <mode>"``; ``vs_float`` is the float
    engine's time in the same mode (else the first run's) over the row's. ``calib`` defaults to 16 random images
    (speed only). On the CPU the same code runs for correctness; the FP8 and INT8 kernels there are slower than
    float.
    """
    from .runtime import lower

    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = input_shape(model)
    if engines is None:
        engines = {"fp8": "fp8_tensor", "int8": int8_linear_recipe()}
    if "float" in engines:
        raise VitqError("'float' is the name of the float model's engine: name the others differently")
    built = {"float": copy.deepcopy(model).eval().to(device, dtype)}
    for name, engine in engines.items():
        if isinstance(engine, nn.Module):
            built[name] = engine.eval().to(device, dtype)
        else:
            calib = calib if calib is not None else [torch.randn(16, *shape)]
            qm = quantize(model, engine, calib=calib, device=device, show_progress=False)
            built[name] = lower(qm, device)[0].to(dtype)
    if runs is None:
        runs = [(name, "compiled" if compile else "eager") for name in built]
    runs = list(runs)
    for name, mode in runs:
        if name not in built or mode not in LOWP_MODES:
            raise VitqError(f"cannot run engine {name!r} in mode {mode!r} (engines: {', '.join(built)}; "
                            f"modes: {', '.join(LOWP_MODES)})")
    rows = []
    for batch in progress(list(batch_sizes), desc="bench", disable=not show_progress):
        x = torch.randn(batch, *shape, device=device, dtype=dtype)
        times, first = {}, {}
        for name, mode in runs:
            fn = built[name]
            if LOWP_MODES[mode] is not None:
                torch._dynamo.reset()
                fn = torch.compile(fn, mode=LOWP_MODES[mode])
            first[name, mode] = _first_call(fn, x)
            times[name, mode] = median_time(fn, x, reps)
        fallback = next(iter(times.values()))
        for (name, mode), sec in times.items():
            base = times.get(("float", mode), fallback)
            rows.append({"batch": batch, "engine": name if mode == "eager" else f"{name} {mode}", "name": name,
                         "mode": mode, "ms": 1000 * sec, "images_per_s": batch / sec, "vs_float": base / sec,
                         "first_call_s": first[name, mode]})
    return rows


def _first_call(fn, x: torch.Tensor) -> float:
    """Seconds of the first call of ``fn(x)`` (for a compiled ``fn``: its compile)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0
