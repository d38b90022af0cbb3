"""save / load a frozen quantized model: ``model.safetensors`` (integer weights, scales, zero points, float
biases and unquantized parameters) plus ``vitq.json`` (how to rebuild the float architecture, the recipe and the
data config). Loading rebuilds the architecture, converts it with the recorded recipe, takes the frozen layout and
loads the tensors, so the reloaded model is bit-exact: weights are dequantized from the same integer codes.

``vitq.json`` also records the SHA-256 of ``model.safetensors``; loading checks it, the metadata and the scales, so
a damaged or altered folder is refused with one line instead of a traceback or a silently wrong model (folders
saved before the checksum existed still load).
"""
from __future__ import annotations

import hashlib
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
from .output import atomic_file

FORMAT = "vitq-quantized"
VERSION = 1
WEIGHTS_FILE, META_FILE = "model.safetensors", "vitq.json"
META_OBJECTS = ("source", "data_config", "config")  # the vitq.json entries a model is rebuilt from


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (the checksum ``vitq.json`` records for ``model.safetensors``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(model: nn.Module, path, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write the frozen ``model`` to the folder ``path`` (refuses to overwrite unless ``overwrite``).

    Each file is written whole or not at all (:func:`vitq.output.atomic_file`); ``vitq.json`` records the
    SHA-256 of the tensors file so that :func:`load` can tell an altered or damaged copy."""
    from safetensors.torch import save_file

    if not is_frozen(model):
        raise VitqError("only a frozen model can be saved: run calibrate() and freeze() first")
    path = Path(path)
    if (path / WEIGHTS_FILE).exists() and not overwrite:
        raise VitqError(f"{path} already holds a saved model (pass overwrite=True / --force)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "source": describe_source(model),
            "data_config": data_config_of(model).to_dict(), "config": model.vitq_config.to_dict(),
            "torch": torch.__version__}
    clash = set(extra or {}) & (set(meta) | {"sha256"})
    if clash:
        raise VitqError(f"save(extra=...) cannot replace the entries {sorted(clash)} of {META_FILE}")
    meta.update(extra or {})
    with atomic_file(path / WEIGHTS_FILE, force=True) as tmp:
        save_file(state, str(tmp))
        meta["sha256"] = file_sha256(tmp)
    with atomic_file(path / META_FILE, force=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_meta(path) -> dict:
    """The ``vitq.json`` of a saved model folder, checked for format, version and the entries :func:`load`
    needs (each an object)."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise VitqError(f"{path} is not a saved vitq model (needs {META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VitqError(f"{meta_path} is not valid JSON") from e
    except OSError as e:
        raise VitqError(f"cannot read {meta_path}: {e.strerror or type(e).__name__}") from e
    if not isinstance(meta, dict):
        raise VitqError(f"{meta_path} is damaged: it holds a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise VitqError(f"{meta_path} is not a vitq quantized model (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise VitqError(f"{path} was saved by format version {meta.get('version')}, this vitq reads {VERSION}")
    for key in META_OBJECTS:
        if not isinstance(meta.get(key), dict):
            problem = "has no" if key not in meta else "has a wrong"
            raise VitqError(f"{meta_path} is damaged: it {problem} {key!r} entry (an object)")
    if "sha256" in meta and not isinstance(meta["sha256"], str):
        raise VitqError(f"{meta_path} is damaged: its 'sha256' entry is not a string")
    return meta


def _verify_checksum(weights: Path, meta: dict) -> None:
    """Refuse a tensors file whose bytes differ from the checksum recorded at save (none recorded: accepted)."""
    expected = meta.get("sha256")
    if expected is not None and file_sha256(weights) != expected.lower():
        raise VitqError(f"{weights} does not match the checksum in {META_FILE}: the file was changed or damaged")


def _read_tensors(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, refused in one line if the file is damaged or a scale is not a
    positive finite number (it would divide by zero or give NaN outputs without an error)."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as e:  # SafetensorError (bad header, truncated file) or OSError: one line naming the file
        msg = (str(e).splitlines() or [""])[0][:200]
        raise VitqError(f"{weights} is damaged and cannot be read ({type(e).__name__}: {msg})") from e
    for name, t in state.items():
        if name.endswith("scale") and t.is_floating_point() and t.numel():
            bad = ~torch.isfinite(t) | (t <= 0)
            if bad.any():
                raise VitqError(f"{weights} is damaged: tensor {name} holds a non-positive or non-finite scale "
                                f"({t[bad].flatten()[0].item()})")
    return state


def _rebuild(meta: dict, meta_path: Path) -> nn.Module:
    """The converted, frozen-layout model described by ``vitq.json`` (before its tensors are loaded); entries
    of the wrong shape give one line naming the file."""
    try:
        config = QuantConfig.from_dict(meta["config"])
        model = build_from_source(meta["source"])
        model = convert(model, config, inplace=True)
        model.vitq_data_config = DataConfig.from_dict(meta["data_config"])
    except VitqError as e:
        raise VitqError(f"{meta_path} is damaged: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        detail = (str(e).splitlines() or [""])[0][:200]
        raise VitqError(f"{meta_path} is damaged: cannot rebuild the model from it ({type(e).__name__}: "
                        f"{detail})") from e
    return model


def load(path) -> nn.Module:
    """Rebuild the frozen model saved at ``path`` (bit-exact with the one that was saved).

    A damaged folder (bad ``vitq.json``, unreadable or altered ``model.safetensors``, invalid scales) is refused
    with a one-line :class:`VitqError`."""
    meta = read_meta(path)
    weights = Path(path) / WEIGHTS_FILE
    _verify_checksum(weights, meta)
    state = _read_tensors(weights)
    model = _rebuild(meta, Path(path) / META_FILE)
    mods = [m for _, m in quant_modules(model)]
    for m in mods:
        m.prepare_frozen_layout()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise VitqError(f"{path}: saved tensors do not fit the recorded model: {str(e).splitlines()[0]}") from e
    for m in mods:
        m.finish_load()
    model.vitq_meta = meta
    return model.eval()
