"""evaluate(): top-1/top-5 of a model and, next to a float reference, prediction agreement and KL divergence.

The float model runs on the same batches in the same loop, so both see identical inputs and the comparison
costs one extra forward, not a second pass over the data.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VitqError
from .progress import progress


def _topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    return int((logits.topk(k, dim=-1).indices == target[:, None]).any(-1).sum())


def check_comparable(model: nn.Module, float_model: nn.Module) -> None:
    """Refuse to compare ``model`` with a ``float_model`` of another input size or class count (a float
    checkpoint that is not the one the quantized model came from)."""
    from .models import data_config_of

    size, fp_size = data_config_of(model).input_size, data_config_of(float_model).input_size
    classes, fp_classes = getattr(model, "num_classes", None), getattr(float_model, "num_classes", None)
    if tuple(size) != tuple(fp_size) or (classes and fp_classes and classes != fp_classes):
        raise VitqError(f"the float model (input {tuple(fp_size)}, {fp_classes} classes) is not the one the "
                        f"quantized model came from (input {tuple(size)}, {classes} classes)")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, float_model: Optional[nn.Module] = None,
             device: Optional[torch.device] = None, show_progress: bool = True, desc: str = "evaluate") -> dict:
    """Accuracy of ``model`` on ``loader`` ((images, labels) batches).

    Returns ``{"images", "top1", "top5", "seconds", "images_per_s"}`` (percentages; seconds of model forward
    only), plus, when ``float_model`` is given (:func:`check_comparable`), ``fp_top1``, ``fp_top5``,
    ``fp_seconds``, ``agreement`` (% of images where both predict the same class) and ``kl`` (mean
    KL(float || model) over images, in nats).
    """
    model.eval()
    if float_model is not None:
        check_comparable(model, float_model)
        float_model.eval()
    n = c1 = c5 = f1 = f5 = agree = 0
    kl_sum = 0.0
    seconds = fp_seconds = 0.0
    for images, target in progress(loader, desc=desc, disable=not show_progress):
        if device is not None:
            images, target = images.to(device), target.to(device)
        t0 = time.perf_counter()
        logits = model(images).float()
        seconds += time.perf_counter() - t0
        n += target.shape[0]
        c1 += _topk_correct(logits, target, 1)
        c5 += _topk_correct(logits, target, 5)
        if float_model is not None:
            t0 = time.perf_counter()
            ref = float_model(images).float()
            fp_seconds += time.perf_counter() - t0
            f1 += _topk_correct(ref, target, 1)
            f5 += _topk_correct(ref, target, 5)
            agree += int((ref.argmax(-1) == logits.argmax(-1)).sum())
            kl_sum += float(F.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                     reduction="sum"))
    if n == 0:
        raise VitqError("evaluation data is empty")
    out = {"images": n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "seconds": seconds,
           "images_per_s": n / max(seconds, 1e-9)}
    if float_model is not None:
        out.update(fp_top1=100.0 * f1 / n, fp_top5=100.0 * f5 / n, agreement=100.0 * agree / n, kl=kl_sum / n,
                   fp_seconds=fp_seconds)
    return out
