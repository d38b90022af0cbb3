"""The calibration phase and the freeze step: one explicit phase each, never "first forward initializes".

    qm = vitq.convert(model, "best")
    vitq.calibrate(qm, calib_loader)     # the whole recipe: its transforms and the observer pass
    vitq.freeze(qm)                      # qparams fixed once, weights quantized once

or all at once: ``vitq.quantize(model, "best", calib=loader)``. For a recipe without transforms (the uniform
``wXaY`` presets, or a custom rule list) the observer pass can also be driven by hand::

    with vitq.calibration(qm):           # activation quantizers observe
        for images, _ in loader:
            qm(images)
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import torch
from torch import nn

from .algorithms import run_transforms
from .convert import named_quantizers, quant_modules
from .errors import VitqError
from .progress import progress


def is_frozen(model: nn.Module) -> bool:
    """True when the model's quant layers are frozen (weights quantized, every qparam fixed)."""
    mods = [m for _, m in quant_modules(model)]
    return bool(mods) and all(m.is_frozen for m in mods)


def _activation_quantizers(model: nn.Module):
    return [(n, q) for n, q in named_quantizers(model) if q.enabled and not q.is_weight]


@contextmanager
def _observing(model: nn.Module) -> Iterator[nn.Module]:
    """Every enabled activation quantizer without fixed qparams observes the tensors that pass."""
    if is_frozen(model):
        raise VitqError("model is frozen: calibrate before freeze()")
    if not any(True for _ in quant_modules(model)):
        raise VitqError("model has no vitq layers: convert it first")
    quantizers = [q for _, q in _activation_quantizers(model) if not q.has_qparams]  # weight-only: none
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.observe()
    try:
        yield model
    finally:
        for q in quantizers:
            q.disable()
        model.train(was_training)


@contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every enabled activation quantizer observes the tensors that pass (values unchanged).

    Only for recipes without transforms: a recipe's transforms (``repq``, ``smoothquant``, ``hessian``, ``gptq``)
    need the calibration images themselves, so such a model is calibrated with :func:`calibrate`, never half.
    """
    config = getattr(model, "vitq_config", None)
    if config is not None and config.transforms:
        names = ", ".join(t.name for t in config.transforms)
        raise VitqError(f"recipe {config.name!r} has transforms ({names}) that need the calibration images: "
                        "use vitq.calibrate(model, images) instead of the calibration() block")
    with _observing(model):
        yield model


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(model: nn.Module, calib: Iterable, device: Optional[torch.device] = None,
              show_progress: bool = True) -> int:
    """Calibrate a converted model with its whole recipe: the transforms that run before the observer pass
    (``repq``, ``smoothquant``), the observer pass over ``calib``, then the ones after it (``hessian``, ``gptq``).

    ``calib`` yields image tensors or (images, labels) pairs; the images are read once and kept in memory, since
    transforms pass over them again. Returns the number of images, and records it with the wall time of each
    step (``model.vitq_calibration``, for reports). Call :func:`freeze` next.
    """
    if is_frozen(model):
        raise VitqError("model is frozen: calibrate before freeze()")
    config = getattr(model, "vitq_config", None)
    if config is None:
        raise VitqError("model has no vitq recipe: convert it first (vitq.convert)")
    if getattr(model, "vitq_calibration", None) is not None:  # transforms would rewrite the weights twice
        raise VitqError("model is already calibrated: convert the float model again to calibrate anew")
    batches = []
    for batch in progress(calib, desc="load calibration", disable=not show_progress):
        x = _images(batch)
        batches.append(x.to(device) if device is not None else x)
    seen = sum(x.shape[0] for x in batches)
    if seen == 0:
        raise VitqError("calibration data is empty")
    model.eval()
    seconds = run_transforms(model, "before", batches)
    t0 = time.perf_counter()
    with _observing(model):
        for x in progress(batches, desc="calibrate", disable=not show_progress):
            model(x)
    seconds["observers"] = time.perf_counter() - t0
    seconds.update(run_transforms(model, "after", batches))
    model.vitq_calibration = {"images": seen, "seconds": seconds}
    return seen


def freeze(model: nn.Module) -> nn.Module:
    """Fix every quantizer's qparams once and quantize every weight once; a second call raises."""
    mods = list(quant_modules(model))
    if not mods:
        raise VitqError("model has no vitq layers: convert it first")
    if any(m.is_frozen for _, m in mods):
        raise VitqError("model is already frozen: weights are quantized exactly once")
    for name, m in mods:
        try:
            m.freeze()
        except VitqError as e:
            raise VitqError(f"cannot freeze {name}.{e}") from None
    return model


def set_quantizers(model: nn.Module, enabled: bool) -> None:
    """Switch every activation quantizer with fixed qparams on or off, e.g. to isolate the weight error."""
    for _, q in _activation_quantizers(model):
        if q.has_qparams:
            q.enable() if enabled else q.disable()
