"""Calibration algorithms of published ViT PTQ work, one module each; each module's docstring names its source.

Observers (a spec's ``observer``), which solve one quantizer's qparams from calibration data:

* ``pct_search`` (:mod:`.percentile_search`): RepQ-ViT's percentile-candidate MSE search, uniform or log.
* ``ptf`` (:mod:`.ptf`): FQ-ViT's power-of-two factor for post-LayerNorm activations.
* ``twin`` (:mod:`.twin_uniform`): PTQ4ViT's twin-uniform scales for softmax and GELU outputs.

Transforms (a recipe's ``transforms``), which run inside ``vitq.quantize`` around the calibration pass:

* ``smoothquant`` (:mod:`.smoothquant`, before): migrate activation outliers into the next Linear's weights.
* ``repq`` (:mod:`.repq`, before): RepQ-ViT's scale reparameterization of post-LayerNorm activations.
* ``hessian`` (:mod:`.hessian`, after): PTQ4ViT's Hessian-guided search of Linear weight and input scales.
* ``gptq`` (:mod:`.gptq`, after): GPTQ's weight rounding with second-order error compensation.

This package imports its modules lazily, so the core (config, quantizer) can name it without import cycles.
"""
from __future__ import annotations

import importlib
from typing import Sequence

import torch
from torch import nn

# name -> (module, stage): "before" runs ahead of the observer pass, "after" between it and freeze()
TRANSFORMS = {"smoothquant": ("smoothquant", "before"), "repq": ("repq", "before"), "hessian": ("hessian", "after"),
              "gptq": ("gptq", "after")}
OBSERVERS = {"pct_search": ("percentile_search", "PercentileSearchObserver"),
             "ptf": ("ptf", "PowerOfTwoFactorObserver"), "twin": ("twin_uniform", "TwinUniformObserver")}


def algorithm_observer(name: str) -> type:
    """The observer class registered under ``name``."""
    module, cls = OBSERVERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def run_transforms(model: nn.Module, stage: str, batches: Sequence[torch.Tensor]) -> None:
    """Apply, in recipe order, the transforms of ``model.vitq_config`` that belong to ``stage``."""
    for t in model.vitq_config.transforms:
        module, when = TRANSFORMS[t.name]
        if when == stage:
            importlib.import_module(f"{__name__}.{module}").apply(model, batches, **dict(t.args))
