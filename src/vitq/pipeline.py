"""The end-to-end jobs behind the CLI, callable from Python: :func:`quantize` (convert, calibrate and freeze in
one call, the one path every caller takes), data loaders for a model, and quantize-and-report.

    model = vitq.load_model("deit_small_patch16_224", pretrained=True)
    calib, val = vitq.loaders(model, "/data/imagenet", calib_size=256)
    qmodel = vitq.quantize(model, "w8a8", calib=calib)
    print(vitq.evaluate(qmodel, val, float_model=model))
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .calibrate import calibrate, freeze
from .config import QuantConfig
from .convert import convert
from .data import (check_classes, default_eval_split, first_subset, has_split, make_loader, open_dataset,
                   random_subset)
from .errors import VitqError
from .evaluate import evaluate
from .models import DEFAULT_DATA, data_config_of, model_name
from .output import staged_output
from .report import coverage, write_report
from .serialize import save


@dataclass
class DataInfo:
    """Where calibration and evaluation images came from, and how they were batched (recorded in reports: the
    batch size changes the result of data-dependent searches)."""

    data: str
    split: str
    calib_data: str
    calib_split: str
    calib_images: int
    eval_images: int
    batch_size: int = 64
    workers: int = 0


def default_data_for(model: nn.Module) -> Path:
    """The data root used when none is given: Fashion-MNIST for the embedded default model only."""
    if (getattr(model, "vitq_source", {}) or {}).get("name") == "fmnist_vit_tiny":
        return DEFAULT_DATA
    raise VitqError("--data is required for this model (an ImageFolder root or a Fashion-MNIST idx folder)")


def _evaluation_set(model: nn.Module, data, split: Optional[str], batch_size: int, workers: int):
    """(dataset, root, split) to evaluate ``model`` on, its labels checked against the model's head."""
    if batch_size < 1 or workers < 0:
        raise VitqError(f"batch size must be at least 1 and workers at least 0 (got {batch_size}, {workers})")
    root = Path(data) if data is not None else default_data_for(model)
    split = split or default_eval_split(root)
    dataset = open_dataset(root, split, data_config_of(model))
    check_classes(dataset, getattr(model, "num_classes", None))
    return dataset, root, split


def loaders(model: nn.Module, data=None, split: Optional[str] = None, calib_split: str = "train",
            calib_data=None, calib_size: int = 256, limit: Optional[int] = None, batch_size: int = 64,
            workers: int = 0, seed: int = 0) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Calibration and evaluation loaders with ``model``'s preprocessing.

    Calibration images are ``calib_size`` images drawn with ``seed`` from ``calib_split`` of ``calib_data``
    (default: the same root). When that split does not exist (an ImageNet ``val/``-only folder), they are drawn
    from the evaluation split instead and held out of the evaluation, so no image is used for both.
    """
    eval_set, root, split = _evaluation_set(model, data, split, batch_size, workers)
    cfg = data_config_of(model)
    calib_root = Path(calib_data) if calib_data is not None else root
    # only a missing default train split falls back to held-out evaluation images; a broken one is an error
    held_out = calib_data is None and calib_split == "train" and not has_split(root, "train")
    calib_pool = eval_set if held_out else open_dataset(calib_root, calib_split, cfg)
    calib_set = random_subset(calib_pool, calib_size, seed)
    if held_out:
        taken = set(calib_set.indices) if isinstance(calib_set, Subset) else set(range(len(calib_pool)))
        rest = [i for i in range(len(eval_set)) if i not in taken]
        if not rest:
            raise VitqError(f"{root}/{split} is too small to hold out {calib_size} calibration images")
        eval_set = Subset(eval_set, rest)
        eval_set.targets = [eval_set.dataset.targets[i] for i in rest]
    eval_set = first_subset(eval_set, limit)
    info = DataInfo(str(root), split, str(calib_root), f"{split} (held out)" if held_out else calib_split,
                    len(calib_set), len(eval_set), batch_size, workers)
    return (make_loader(calib_set, batch_size, workers), make_loader(eval_set, batch_size, workers), info)


def eval_loader(model: nn.Module, data=None, split: Optional[str] = None, limit: Optional[int] = None,
                batch_size: int = 64, workers: int = 0) -> tuple[DataLoader, Path, str]:
    """The evaluation loader of ``vitq eval``: ``split`` (default test, else val) of ``data`` (default: the
    embedded model's Fashion-MNIST) with ``model``'s preprocessing, its labels checked against the model's head.
    Returns the loader, the data root and the split."""
    ds, root, split = _evaluation_set(model, data, split, batch_size, workers)
    return make_loader(first_subset(ds, limit), batch_size, workers), root, split


def quantize(model: nn.Module, config="w8a8", calib: Optional[Iterable] = None, device=None,
             show_progress: bool = True, registry=None) -> nn.Module:
    """Convert ``model`` with ``config`` (a QuantConfig, preset name, dict or recipe file), calibrate it on
    ``calib`` with the whole recipe (:func:`vitq.calibrate`) and freeze it. Returns the quantized copy; ``model``
    is unchanged."""
    if calib is None:
        raise VitqError("quantize() needs calibration data (calib=...)")
    qmodel = convert(model, config, registry=registry)
    if device is not None:
        qmodel.to(device)
    calibrate(qmodel, calib, device=device, show_progress=show_progress)
    return freeze(qmodel)


def quantize_and_report(model: nn.Module, config: QuantConfig, calib: DataLoader, val: DataLoader,
                        info: DataInfo, out=None, force: bool = False, device=None, seed: int = 0,
                        show_progress: bool = True, mixed: Optional[dict] = None) -> tuple[nn.Module, dict]:
    """Convert, calibrate, freeze, evaluate next to the float model, and (with ``out``) save model and reports.

    ``mixed``: the report of :func:`vitq.mixed_precision` that chose ``config``; it is recorded as
    ``mixed_precision`` and ``w_bits``/``a_bits`` become the achieved averages."""
    device = torch.device(device) if device is not None else None
    t0 = time.perf_counter()
    if device is not None:
        model.to(device)
    qmodel = quantize(model, config, calib, device=device, show_progress=show_progress)
    seconds_calibrate = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(qmodel, val, float_model=model, device=device, show_progress=show_progress)
    seconds_eval = time.perf_counter() - t0
    report = {
        "model": model_name(model), "recipe": config.name, "qkv": config.qkv,
        "w_bits": config.bits("weight"), "a_bits": config.bits("activation"),
        "calib_images": info.calib_images, "eval_images": res["images"],
        "fp_top1": res["fp_top1"], "q_top1": res["top1"], "fp_top5": res["fp_top5"], "q_top5": res["top5"],
        "agreement": res["agreement"], "kl": res["kl"],
        "seconds_calibrate": seconds_calibrate, "seconds_eval": seconds_eval,
        "seconds_calibrate_steps": qmodel.vitq_calibration["seconds"],
        "throughput_ratio": res["fp_seconds"] / max(res["seconds"], 1e-9),
        "data": info.data, "split": info.split, "calib_data": info.calib_data, "calib_split": info.calib_split,
        "seed": seed, "batch_size": info.batch_size, "workers": info.workers,
        "device": str(device or "cpu"), "torch": torch.__version__,
        "coverage": coverage(qmodel), "config": config.to_dict(),
    }
    if mixed is not None:
        report["w_bits"], report["a_bits"] = mixed.get("avg_w_bits"), mixed.get("avg_a_bits")
        report["mixed_precision"] = mixed
    if out is not None:
        with staged_output(out, force) as tmp:
            save(qmodel, tmp, extra={"report": {k: v for k, v in report.items() if k != "config"}})
            write_report(tmp, report)
    return qmodel, report
