"""Load the float model to quantize: a timm name, a local checkpoint (+ JSON config), or the embedded default.

Every model that vitq loads carries two plain attributes:

* ``vitq_source``: a JSON-able recipe to rebuild the same float architecture (``{"kind": "timm", "name", "kwargs"}``
  or ``{"kind": "vit_json", "cfg"}``), so that :func:`vitq.save` can write a quantized model that
  :func:`vitq.load` rebuilds without the original checkpoint;
* ``vitq_data_config``: the :class:`vitq.data.DataConfig` its inputs need.

The JSON config format is the one of ``cifar10_vit_tiny.json``: ``{"cfg": {img_size, patch_size, in_chans,
num_classes, embed_dim, depth, num_heads, mean, std, [mlp_ratio], [qkv_bias]}}``; :func:`check_vit_cfg` says
what each key must hold.
"""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .data import DataConfig
from .errors import VitqError

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fmnist_vit_tiny.safetensors"
DEFAULT_MODEL_NAME = "fmnist_vit_tiny"
DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")

_VIT_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_vit_cfg(cfg, origin: str = "model config") -> None:
    """Raise a one-line VitqError (``<origin>: <key> ... got <value>``) unless ``cfg`` describes a buildable
    VisionTransformer, so that a bad config fails before timm does (with a traceback, or by building a model
    of the wrong size) and before any data is read.

    The seven architecture keys are positive integers (not bools); ``img_size`` is divisible by ``patch_size``
    and ``embed_dim`` by ``num_heads``; ``mean``/``std`` (optional) list one finite number per input channel,
    every ``std`` above zero; ``mlp_ratio`` (optional) is a positive number and ``qkv_bias`` (optional) a bool.
    Other keys (training settings such as ``pad``) are ignored.
    """
    if not isinstance(cfg, dict):
        raise VitqError(f"{origin}: 'cfg' must be a JSON object, got {type(cfg).__name__} {cfg!r:.60}")
    missing = [k for k in _VIT_ARGS if k not in cfg]
    if missing:
        raise VitqError(f"{origin} lacks {', '.join(missing)}")
    for key in _VIT_ARGS:
        if not _is_int(cfg[key]) or cfg[key] <= 0:
            raise VitqError(f"{origin}: {key} must be a positive integer, got {cfg[key]!r}")
    for num, den in (("img_size", "patch_size"), ("embed_dim", "num_heads")):
        if cfg[num] % cfg[den]:
            raise VitqError(f"{origin}: {num} {cfg[num]} is not divisible by {den} {cfg[den]}")
    for key in ("mean", "std"):
        values = cfg.get(key, [0.5] * cfg["in_chans"])
        if not isinstance(values, list) or len(values) != cfg["in_chans"] or not all(map(_is_number, values)):
            raise VitqError(f"{origin}: {key} must list {cfg['in_chans']} numbers (one per input channel, "
                            f"in_chans), got {values!r:.80}")
    if min(cfg.get("std", [0.5])) <= 0:
        raise VitqError(f"{origin}: std values must be positive, got {cfg['std']!r}")
    ratio = cfg.get("mlp_ratio", 4.0)
    if not _is_number(ratio) or ratio <= 0:
        raise VitqError(f"{origin}: mlp_ratio must be a positive number, got {ratio!r}")
    if not isinstance(cfg.get("qkv_bias", True), bool):
        raise VitqError(f"{origin}: qkv_bias must be true or false, got {cfg['qkv_bias']!r}")


def build_vit_from_cfg(cfg: dict, origin: str = "model config") -> nn.Module:
    """A timm VisionTransformer from a JSON ``cfg``, checked first by :func:`check_vit_cfg` (errors name
    ``origin``; training-only keys such as ``pad`` are ignored)."""
    from timm.models.vision_transformer import VisionTransformer

    check_vit_cfg(cfg, origin)
    kwargs = {k: cfg[k] for k in _VIT_ARGS}
    return VisionTransformer(mlp_ratio=cfg.get("mlp_ratio", 4.0), qkv_bias=cfg.get("qkv_bias", True), **kwargs)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Float32 tensors from a safetensors file, a state-dict ``.pth``/``.pt``, or a full timm training checkpoint
    (``{"state_dict": ...}`` / ``{"model": ...}``, optional ``module.`` prefixes)."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises weights_only=False, which vitq never uses
        raise VitqError(f"cannot read checkpoint {path}: it holds Python objects, not only tensors (vitq loads "
                        "state dicts of tensors only, never arbitrary pickles)") from e
    except Exception as e:  # unreadable or corrupt file: one line naming the file
        raise VitqError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise VitqError(f"checkpoint {path} is not a state dict of tensors")
    return {k.removeprefix("module."): (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``sd`` strictly, turning key or shape mismatches into one readable error."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and
             sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (first: {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise VitqError(f"checkpoint {origin} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(sd)


def _data_config_from_cfg(cfg: dict) -> DataConfig:
    c = cfg["in_chans"]
    size = cfg["img_size"]
    mean, std = (tuple(float(v) for v in cfg.get(key, [0.5] * c)) for key in ("mean", "std"))
    return DataConfig((c, size, size), mean, std, interpolation="bilinear", crop_pct=1.0)


def timm_data_config(model: nn.Module) -> DataConfig:
    """The evaluation data config timm resolves for ``model``."""
    import timm.data

    d = timm.data.resolve_data_config({}, model=model)
    return DataConfig(tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bicubic"),
                      float(d.get("crop_pct", 1.0)))


def _tag(model: nn.Module, source: dict, data_config: DataConfig) -> nn.Module:
    model.vitq_source = source
    model.vitq_data_config = data_config
    return model.eval()


def load_json_model(checkpoint: Path, config: Path) -> nn.Module:
    """A VisionTransformer described by a JSON config, with weights from ``checkpoint``."""
    config = Path(config)
    if not config.is_file():
        raise VitqError(f"model config {config} does not exist")
    try:
        cfg = json.loads(config.read_text())["cfg"]
    except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON or not UTF-8
        raise VitqError(f"{config} is not a vitq/timm model config (needs a 'cfg' object)") from e
    model = build_vit_from_cfg(cfg, origin=str(config))
    load_weights(model, read_state_dict(checkpoint), str(checkpoint))
    return _tag(model, {"kind": "vit_json", "cfg": cfg}, _data_config_from_cfg(cfg))


def create_timm(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with one-line errors for unknown names and failed downloads."""
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise VitqError(f"unknown timm model {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        if pretrained:
            raise VitqError(f"could not fetch pretrained weights for {name!r} (is there a network?): "
                            f"{type(e).__name__}") from e
        raise VitqError(f"timm could not build {name!r}: {str(e).splitlines()[0][:200]}") from e
    return _tag(model, {"kind": "timm", "name": name, "kwargs": kwargs}, timm_data_config(model))


def load_model(name: Optional[str] = None, checkpoint: Optional[str] = None, config: Optional[str] = None,
               pretrained: bool = False, num_classes: Optional[int] = None) -> nn.Module:
    """The float model a command works on.

    * ``checkpoint`` (+ ``config``, or a ``.json`` beside the checkpoint): a JSON-described VisionTransformer;
    * ``name`` + ``checkpoint``: timm architecture ``name`` with those weights;
    * ``name``: timm model (random init unless ``pretrained``, which needs a network);
    * nothing: the embedded Fashion-MNIST ViT that ships with vitq.

    Combinations in which an argument would be silently ignored are refused.
    """
    if config is not None and checkpoint is None:
        raise VitqError("a model config (--config) describes the weights of a checkpoint: give --checkpoint too")
    if pretrained and checkpoint is not None:
        raise VitqError("--pretrained and --checkpoint both give the weights: use one")
    if pretrained and name is None:
        raise VitqError("--pretrained needs a timm model name (--model)")
    if num_classes is not None and name is None:
        raise VitqError("--num-classes sizes the head of a timm model (--model); a JSON config or the embedded "
                        "model sets its own")
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise VitqError(f"checkpoint {ckpt} does not exist")
        if config is None and name is None and ckpt.with_suffix(".json").is_file():
            config = str(ckpt.with_suffix(".json"))
        if config is not None:
            return load_json_model(ckpt, Path(config))
        if name is None:
            raise VitqError(f"checkpoint {ckpt} needs --model NAME or a JSON --config (none found beside it)")
        kwargs = {"num_classes": num_classes} if num_classes else {}
        model = create_timm(name, pretrained=False, **kwargs)
        sd = read_state_dict(ckpt)
        if num_classes is None and "head.weight" in sd and sd["head.weight"].shape[0] != model.num_classes:
            model = create_timm(name, pretrained=False, num_classes=sd["head.weight"].shape[0])
        load_weights(model, sd, str(ckpt))
        return model
    if name is not None:
        kwargs = {"num_classes": num_classes} if num_classes else {}
        return create_timm(name, pretrained=pretrained, **kwargs)
    return load_default_model()


def load_default_model() -> nn.Module:
    """The small ViT trained on Fashion-MNIST that ships inside the package (see ``scripts/train_default.py``)."""
    if not DEFAULT_MODEL.is_file():
        raise VitqError(f"embedded model {DEFAULT_MODEL} is missing from this install")
    model = load_json_model(DEFAULT_MODEL, DEFAULT_MODEL.with_suffix(".json"))
    model.vitq_source = {"kind": "vit_json", "cfg": model.vitq_source["cfg"], "name": DEFAULT_MODEL_NAME}
    return model


def build_from_source(source: dict) -> nn.Module:
    """A random-init float model of the architecture recorded in ``source`` (see module docstring)."""
    kind = source.get("kind")
    if kind == "vit_json":
        cfg = source["cfg"]
        return _tag(build_vit_from_cfg(cfg), source, _data_config_from_cfg(cfg))
    if kind == "timm":
        return create_timm(source["name"], pretrained=False, **source.get("kwargs", {}))
    raise VitqError(f"unknown model source kind {kind!r}")


def describe_source(model: nn.Module) -> dict:
    """The rebuild recipe of ``model``: its ``vitq_source``, or one derived from a timm model's own config."""
    source = getattr(model, "vitq_source", None)
    if source is not None:
        return source
    arch = getattr(model, "pretrained_cfg", {}).get("architecture")
    if arch is None:
        raise VitqError("cannot record how to rebuild this model: load it with vitq.load_model or create it with "
                        "timm.create_model")
    kwargs = {"num_classes": getattr(model, "num_classes", 1000)}
    return {"kind": "timm", "name": arch, "kwargs": kwargs}


def data_config_of(model: nn.Module) -> DataConfig:
    """The data config a model was tagged with, else timm's for it."""
    cfg = getattr(model, "vitq_data_config", None)
    return cfg if cfg is not None else timm_data_config(model)


def model_name(model: nn.Module) -> str:
    """A short human name for reports."""
    source = getattr(model, "vitq_source", {}) or {}
    if "name" in source:
        return source["name"]
    if source.get("kind") == "vit_json":
        c = source["cfg"]
        return f"vit(img{c['img_size']},p{c['patch_size']},d{c['embed_dim']}x{c['depth']})"
    return type(model).__name__
