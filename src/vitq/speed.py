"""Inference speed of one model on the CPU engines that matter for deployment, measured in one process.

Engines: PyTorch FP32, PyTorch ``quantize_dynamic`` (fbgemm INT8 Linear), onnxruntime FP32 (the float model
exported to ONNX) and onnxruntime INT8 (the vitq QDQ export of the quantized model). Each is timed as the best of
N runs after a warm-up, so the ratios between engines are what to read (timings on a shared CPU are noisy).
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from .calibrate import quantize
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
