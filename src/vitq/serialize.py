"""save / load a frozen quantized model: ``model.safetensors`` (integer weights, scales, zero points, float
biases and unquantized parameters) plus ``vitq.json`` (how to rebuild the float architecture, the recipe and the
data config). Loading rebuilds the architecture, converts it with the recorded recipe, takes the frozen layout and
loads the tensors, so the reloaded model is bit-exact: weights are dequantized from the same integer codes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .calibrate import is_frozen
from .config import QuantConfig
from .convert import convert, quant_modules
from .data import DataConfig
from .errors import VitqError
from .models import build_from_source, data_config_of, describe_source

FORMAT = "vitq-quantized"
VERSION = 1
WEIGHTS_FILE, META_FILE = "model.safetensors", "vitq.json"


def save(model: nn.Module, path, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write the frozen ``model`` to the folder ``path`` (refuses to overwrite unless ``overwrite``)."""
    from safetensors.torch import save_file

    if not is_frozen(model):
        raise VitqError("only a frozen model can be saved: run calibrate() and freeze() first")
    path = Path(path)
    if (path / WEIGHTS_FILE).exists() and not overwrite:
        raise VitqError(f"{path} already holds a saved model (pass overwrite=True / --force)")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "source": describe_source(model),
            "data_config": data_config_of(model).to_dict(), "config": model.vitq_config.to_dict(),
            "torch": torch.__version__, **(extra or {})}
    save_file(state, str(path / WEIGHTS_FILE))
    (path / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_meta(path) -> dict:
    """The ``vitq.json`` of a saved model folder, checked for format and version."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise VitqError(f"{path} is not a saved vitq model (needs {META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise VitqError(f"{meta_path} is not valid JSON") from e
    if meta.get("format") != FORMAT:
        raise VitqError(f"{meta_path} is not a vitq quantized model (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise VitqError(f"{path} was saved by format version {meta.get('version')}, this vitq reads {VERSION}")
    return meta


def load(path) -> nn.Module:
    """Rebuild the frozen model saved at ``path`` (bit-exact with the one that was saved)."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    config = QuantConfig.from_dict(meta["config"])
    model = build_from_source(meta["source"])
    model = convert(model, config, inplace=True)
    model.vitq_data_config = DataConfig.from_dict(meta["data_config"])
    mods = [m for _, m in quant_modules(model)]
    for m in mods:
        m.prepare_frozen_layout()
    state = load_file(str(Path(path) / WEIGHTS_FILE))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise VitqError(f"{path}: saved tensors do not fit the recorded model: {str(e).splitlines()[0]}") from e
    for m in mods:
        m.finish_load()
    model.vitq_meta = meta
    return model.eval()
