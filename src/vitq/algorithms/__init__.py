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

This package imports its modules lazily: they build on the core (observers, nn, convert), which names them.
"""
from __future__ import annotations

import importlib
import inspect
import time
from typing import Sequence

import torch
from torch import nn

from ..errors import VitqError

# name -> (module, stage): "before" runs ahead of the observer pass, "after" between it and freeze()
TRANSFORMS = {"smoothquant": ("smoothquant", "before"), "repq": ("repq", "before"), "hessian": ("hessian", "after"),
              "gptq": ("gptq", "after"), "reconstruct": ("reconstruct", "after")}


def _apply_fn(name: str):
    return importlib.import_module(f"{__name__}.{TRANSFORMS[name][0]}").apply


def check_transform(name: str, args: dict) -> None:
    """Refuse an unknown transform, or arguments its algorithm does not take, when the recipe is read."""
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise VitqError(f"unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")
    try:
        inspect.signature(_apply_fn(name)).bind(None, None, **args)
    except TypeError as e:
        raise VitqError(f"transform {name!r}: {e}") from None


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
