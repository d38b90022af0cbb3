"""Lower a frozen vitq model onto real low-precision kernels, choosing the kernel per layer and per device.

* :func:`kernel_support` says what a device runs: FP8 GEMMs need CUDA compute capability 8.9+ (Ada, Hopper);
  ``torch._int_mm`` runs on CUDA 7.5+ and on the CPU (slower than float there).
* :func:`recommended_preset` picks the recipe for a device: ``fp8`` where FP8 tensor cores exist (on Hopper FP8
  GEMMs beat ``_int_mm``), ``w8a8`` elsewhere (on a CPU, deploy that through ONNX: ``vitq export``).
* :func:`lower` swaps each eligible QuantLinear of a frozen model for Fp8Linear (fp8_e4m3 recipe) or Int8Linear
  (8-bit uniform recipe), and an fp8 patch-embedding convolution for Fp8PatchConv (one GEMM over the patches);
  layers without a kernel stay fake-quant, each with its reason.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn

from ..calibrate import is_frozen
from ..convert import quant_modules
from ..errors import VitqError
from ..nn import QuantConv2d, QuantLinear
from .eligibility import fp8_reason, int8_reason
from .fp8 import Fp8Linear, Fp8PatchConv
from .int8 import Int8Linear


def kernel_support(device=None) -> dict:
    """``{"fp8": bool, "int8": bool}`` for ``device`` (default: CUDA if available, else CPU)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return {"fp8": True, "int8": True, "fast": False}  # both run on the CPU, for correctness only
    cap = torch.cuda.get_device_capability(device)
    return {"fp8": cap >= (8, 9), "int8": cap >= (7, 5), "fast": True}


def recommended_preset(device=None) -> str:
    """``fp8`` on GPUs with FP8 tensor cores, else ``w8a8``."""
    support = kernel_support(device)
    return "fp8" if support["fast"] and support["fp8"] else "w8a8"


def _swap_layers(model: nn.Module, build: Callable[[nn.Module], Optional[nn.Module]]) -> None:
    """Replace, in place, every QuantLinear / QuantConv2d for which ``build`` returns a module."""
    modules = dict(model.named_modules())
    for name, m in list(quant_modules(model)):
        if isinstance(m, (QuantLinear, QuantConv2d)):
            new = build(m)
            if new is not None:
                parent, _, attr = name.rpartition(".")
                setattr(modules[parent] if parent else model, attr, new)


def lower(model: nn.Module, device=None, kernels: tuple[str, ...] = ("fp8", "int8")) -> tuple[nn.Module, dict]:
    """A copy of the frozen ``model`` with FP8/INT8 kernels where the recipe, ``device`` and ``kernels`` allow.

    Returns the model and ``{"fp8": [names], "int8": [names], "kept": {name: reason}}``; ``kernels=("int8",)``
    lowers onto integer GEMMs only.
    """
    unknown = set(kernels) - {"fp8", "int8"}
    if unknown:
        raise VitqError(f"unknown kernels {sorted(unknown)} (known: fp8, int8)")
    if not is_frozen(model):
        raise VitqError("only a frozen model can run on low-precision kernels: calibrate and freeze it first")
    support = kernel_support(device)
    model = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    report = {"fp8": [], "int8": [], "kept": {}}

    def build(layer):
        name = names[id(layer)]
        if layer.weight_quantizer.enabled and layer.weight_quantizer.scheme.kernel == "fp8":
            reason = fp8_reason(layer) or (None if support["fp8"] else "this GPU has no FP8 tensor cores (sm < 8.9)")
            kind = "fp8"
            make = Fp8PatchConv.from_quant_conv if isinstance(layer, QuantConv2d) else Fp8Linear.from_quant_linear
        elif isinstance(layer, QuantConv2d):
            return None  # integer convolutions are left to ONNX export
        else:
            reason = int8_reason(layer) or (None if support["int8"] else "this GPU has no int8 _int_mm (sm < 7.5)")
            kind, make = "int8", Int8Linear.from_quant_linear
        if kind not in kernels:
            return None
        if reason is not None:
            report["kept"][name] = reason
            return None
        report[kind].append(name)
        return make(layer)

    _swap_layers(model, build)
    return model, report
