"""The calibration phase and the freeze step: one explicit phase each, never "first forward initializes".

    qm = vitq.convert(model, "w8a8")
    with vitq.calibration(qm):          # activation quantizers observe
        for images, _ in loader:
            qm(images)
    vitq.freeze(qm)                      # qparams solved once, weights quantized once

or all at once: ``vitq.quantize(model, "w8a8", calib=loader)``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import torch
from torch import nn

from .convert import convert, named_quantizers, quant_modules
from .errors import VitqError
from .progress import progress


def is_frozen(model: nn.Module) -> bool:
    """True when the model's quant layers are frozen."""
    mods = [m for _, m in quant_modules(model)]
    return bool(mods) and all(m.is_frozen for m in mods)


def _activation_quantizers(model: nn.Module, unfrozen: bool = False):
    return [(n, q) for n, q in named_quantizers(model)
            if q.enabled and not q.is_weight and not (unfrozen and q.frozen)]


@contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every enabled activation quantizer observes the tensors that pass (values unchanged).

    Quantizers whose qparams a calibration algorithm already set (``Quantizer.set_qparams``) are left alone.
    """
    if is_frozen(model):
        raise VitqError("model is frozen: calibrate before freeze()")
    quantizers = _activation_quantizers(model, unfrozen=True)
    if not quantizers:
        raise VitqError("model has no enabled activation quantizers: convert it first")
    was_training = model.training
    model.eval()
    for _, q in quantizers:
        q.set_state("observe")
    try:
        yield model
    finally:
        for _, q in quantizers:
            q.state = "off"
        model.train(was_training)


def _images(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, device: Optional[torch.device] = None,
              show_progress: bool = True) -> int:
    """Run ``batches`` (tensors or (images, labels) pairs) through the model in calibration mode.

    Returns the number of images seen.
    """
    seen = 0
    with calibration(model):
        for batch in progress(batches, desc="calibrate", disable=not show_progress):
            x = _images(batch)
            if device is not None:
                x = x.to(device)
            model(x)
            seen += x.shape[0]
    if seen == 0:
        raise VitqError("calibration data is empty")
    return seen


def freeze(model: nn.Module) -> nn.Module:
    """Solve every quantizer's qparams once and quantize every weight once; a second call raises."""
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


def run_calibration(model: nn.Module, calib: Iterable, device: Optional[torch.device] = None,
                    show_progress: bool = True) -> int:
    """The whole calibration of a converted model's recipe: the transforms that run before the observer pass
    (e.g. ``repq``, ``smoothquant``), the pass itself (:func:`calibrate`), then the ones after it (``hessian``).

    The calibration images are read once and kept in memory, since the transforms pass over them again.
    Returns the number of images. Call :func:`freeze` next.
    """
    from .algorithms import run_transforms

    if is_frozen(model):
        raise VitqError("model is frozen: calibrate before freeze()")
    batches = []
    for batch in progress(calib, desc="load calibration", disable=not show_progress):
        x = _images(batch)
        batches.append(x.to(device) if device is not None else x)
    if not batches or sum(x.shape[0] for x in batches) == 0:
        raise VitqError("calibration data is empty")
    model.eval()
    config = getattr(model, "vitq_config", None)
    if config is not None:
        run_transforms(model, "before", batches)
    seen = calibrate(model, batches, show_progress=show_progress)
    if config is not None:
        run_transforms(model, "after", batches)
    return seen


def quantize(model: nn.Module, config="w8a8", calib: Optional[Iterable] = None, device=None,
             show_progress: bool = True, registry=None) -> nn.Module:
    """Convert, calibrate on ``calib`` (running the recipe's transforms) and freeze, in one call.

    Returns the quantized copy; ``model`` is unchanged.
    """
    if calib is None:
        raise VitqError("quantize() needs calibration data (calib=...)")
    qmodel = convert(model, config, registry=registry)
    if device is not None:
        qmodel.to(device)
    run_calibration(qmodel, calib, device=device, show_progress=show_progress)
    return freeze(qmodel)


def set_quantizers(model: nn.Module, enabled: bool) -> None:
    """Switch every frozen activation quantizer on (``quantize``) or off, e.g. to isolate weight error."""
    for _, q in _activation_quantizers(model):
        if q.frozen:
            q.state = "quantize" if enabled else "off"
