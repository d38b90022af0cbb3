"""Calibration algorithms of published ViT PTQ work, one module each; each module's docstring names its source.

Observers (a spec's ``observer``, registered in :data:`vitq.observers.OBSERVERS`), which solve one quantizer's
qparams from calibration data:

* ``pct_search`` (:mod:`.percentile_search`): RepQ-ViT's percentile-candidate MSE search, uniform or log.
* ``ptf`` (:mod:`.ptf`): FQ-ViT's power-of-two factor for post-LayerNorm activations.
* ``twin`` (:mod:`.twin_uniform`): PTQ4ViT's twin-uniform scales for softmax and GELU outputs.

Transforms (a recipe's ``transforms``), which ``vitq.calibrate`` runs around the observer pass:

* ``smoothquant`` (:mod:`.smoothquant`, before): migrate activation outliers into the next Linear's weights.
* ``repq`` (:mod:`.repq`, before): RepQ-ViT's scale reparameterization of post-LayerNorm activations.
* ``hessian`` (:mod:`.hessian`, after): PTQ4ViT's Hessian-guided search of Linear weight and input scales.
* ``gptq`` (:mod:`.gptq`, after): GPTQ's weight rounding with second-order error compensation.
* ``reconstruct`` (:mod:`.reconstruct`, after): BRECQ / QDrop block reconstruction (AdaRound rounding,
  :mod:`.adaround`, and LSQ step sizes), unit by unit against the float model.

This package imports its modules lazily: they build on the core (observers, nn, convert), which names them.
"""
from __future__ import annotations

import importlib
import inspect
import math
import time
from typing import Sequence

import torch
from torch import nn

from ..errors import VitqError

# name -> (module, stage): "before" runs ahead of the observer pass, "after" between it and freeze()
TRANSFORMS = {"smoothquant": ("smoothquant", "before"), "repq": ("repq", "before"), "hessian": ("hessian", "after"),
              "gptq": ("gptq", "after"), "reconstruct": ("reconstruct", "after")}


def _module(name: str):
    return importlib.import_module(f"{__name__}.{TRANSFORMS[name][0]}")


def _apply_fn(name: str):
    return _module(name).apply


def _check_value(name: str, arg: str, value, default, limit) -> None:
    """One transform argument: the type of its default (a number for a float, a list of numbers for a
    sequence), and the module's ``ARG_LIMITS`` entry: ``(low, high)`` bounds (None: open) or a set of choices."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = number, "a finite number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value)
        kind = "a non-empty list of positive numbers"
    else:
        ok, kind = True, ""
    if isinstance(limit, (set, frozenset)):
        ok, kind = ok and value in limit, f"one of {sorted(limit)}"
    elif limit is not None:
        lo, hi = limit
        ok = ok and (value is None or (number and (lo is None or value >= lo) and (hi is None or value <= hi)))
        kind = f"{kind or 'a number'} in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if not ok:
        raise VitqError(f"transform {name!r}: {arg} must be {kind}, not {value!r}")


def check_transform(name: str, args: dict) -> None:
    """Refuse an unknown transform, arguments its algorithm does not take, or values of the wrong type or out of
    range (the module's ``ARG_LIMITS``), when the recipe is read rather than after calibration has run."""
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise VitqError(f"unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")
    module = _module(name)
    signature = inspect.signature(module.apply)
    try:
        signature.bind(None, None, **args)
    except TypeError as e:
        raise VitqError(f"transform {name!r}: {e}") from None
    limits = getattr(module, "ARG_LIMITS", {})
    for arg, value in args.items():
        _check_value(name, arg, value, signature.parameters[arg].default, limits.get(arg))


def run_transforms(model: nn.Module, stage: str, batches: Sequence[torch.Tensor]) -> dict[str, float]:
    """Apply, in recipe order, the transforms of ``model.vitq_config`` that belong to ``stage``; returns the wall
    time of each (seconds, by transform name) for reports."""
    seconds = {}
    for t in model.vitq_config.transforms:
        if TRANSFORMS[t.name][1] == stage:
            t0 = time.perf_counter()
            _apply_fn(t.name)(model, batches, **dict(t.args))
            seconds[t.name] = seconds.get(t.name, 0.0) + time.perf_counter() - t0
    return seconds
