"""Presets, the one home of named recipes: uniform min-max ``wXaY`` presets and method presets (published ViT PTQ
recipes and vitq's best combination), as QuantConfigs at any bit widths; and :func:`resolve_config`, which turns
whatever a user passes (a config, a preset name, a dict, a recipe file) into a QuantConfig.

Every preset shares one coverage (that of RepQ-ViT's code, so rows compare): the image entering the patch
embedding at 8 bits; every Linear/Conv weight (patch embedding and head included) at ``w_bits``; every Linear
input, Q, K, V and the softmax output at ``a_bits``; LayerNorm, GELU, softmax and residual adds in float. What
differs is how each quantizer is calibrated:

=============== ======================================================================================
``repq``        RepQ-ViT: percentile-search scales, asymmetric per-channel weights, post-LayerNorm
                reparameterization (``repq`` transform), log-sqrt2 softmax; strict: at most 2^b levels
``repq_faithful`` the same, as loose as RepQ-ViT's code: unrounded zero point, extra log zero level
``ptq4vit``     PTQ4ViT: Hessian-guided search of Linear scales, twin-uniform softmax and post-GELU
``fqvit``       FQ-ViT: power-of-two factor for post-LayerNorm inputs, log2 softmax, min-max elsewhere
``smoothquant`` SmoothQuant (alpha 0.5) into qkv and fc1, min-max elsewhere
``best``        vitq's best combination: ``repq`` + twin-uniform post-GELU + Hessian-guided weight scales
                (and a twin-uniform softmax at 3 bits or fewer)
``best_recon``  ``best``, then block reconstruction (``reconstruct`` transform: AdaRound rounding, LSQ step
                sizes, QDrop) before freeze
``qdrop``       QDrop: MSE-calibrated uniform scales, then block reconstruction with QDrop (drop 0.5)
``brecq``       BRECQ: the same without QDrop (drop 0)
``fp8``         FP8 e4m3 Linear layers and patch embedding (weights per channel, inputs per tensor),
                attention in float:
                the recipe for FP8 tensor-core GEMMs (8 bits only)
``fp8_tensor``  the same with one weight scale per tensor (tensor-wise scaled GEMM, faster on Hopper)
=============== ======================================================================================

Method presets default to W4A4, the setting the papers headline; ``preset("repq", w_bits=6, a_bits=6)`` or
``vitq quantize --preset repq --w-bits 6 --a-bits 6`` picks other bits.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from .config import QuantConfig, QuantRule, QuantSpec, Transform
from .errors import VitqError
from .granularity import Granularity, PerChannel, PerTensor


def _rules(weight: QuantSpec, act: QuantSpec, softmax: QuantSpec, post_ln: Optional[QuantSpec] = None,
           post_gelu: Optional[QuantSpec] = None, image: Optional[QuantSpec] = None) -> tuple[QuantRule, ...]:
    """The shared coverage (module docstring) with a spec per kind of tensor.

    Layer outputs and the already-quantized matmul operands stay off: no quantizer runs twice on one tensor.
    """
    rules = [QuantRule("patch_embed.proj.input_quantizer", image or QuantSpec(8, symmetric=False), "fixed"),
             QuantRule("*weight_quantizer", weight, "weight"),
             QuantRule("*output_quantizer", None),
             QuantRule("*.matmul_qk.*", None),
             QuantRule("*.matmul_av.b_quantizer", None),
             QuantRule("*.matmul_av.a_quantizer", softmax)]
    if post_ln is not None:
        rules += [QuantRule("*.attn.qkv.input_quantizer", post_ln), QuantRule("*.mlp.fc1.input_quantizer", post_ln)]
    if post_gelu is not None:
        rules.append(QuantRule("*.mlp.fc2.input_quantizer", post_gelu))
    rules += [QuantRule("*input_quantizer", act), QuantRule("*[qkv]_quantizer", act)]
    return tuple(rules)


def uniform(w: int, a: int, w_granularity: Granularity = PerChannel(), a_granularity: Granularity = PerTensor(),
            a_observer: str = "minmax", w_observer: str = "minmax", qkv: str = "split",
            name: Optional[str] = None) -> QuantConfig:
    """The uniform min-max preset ``wXaY``: symmetric weights (per output channel by default), asymmetric
    activations (per tensor by default), a symmetric unsigned softmax output, the image at 8 bits."""
    return QuantConfig(
        rules=_rules(weight=QuantSpec(w, True, w_granularity, w_observer),
                     act=QuantSpec(a, symmetric=False, granularity=a_granularity, observer=a_observer),
                     softmax=QuantSpec(a, symmetric=True, observer=a_observer)),
        qkv=qkv, name=name or f"w{w}a{a}")


def _twin(bits: int, signed=None) -> QuantSpec:
    """PTQ4ViT's twin-uniform quantizer (softmax: ``signed=False``; post-GELU: sign from the data)."""
    return QuantSpec(bits, True, scheme="twin_uniform", observer="twin", signed=signed)


def repq(w: int, a: int, strict: bool = True) -> QuantConfig:
    """RepQ-ViT (Li et al., ICCV 2023); ``strict=False`` is ``repq_faithful``."""
    search = QuantSpec(a, symmetric=False, observer="pct_search")
    return QuantConfig(
        rules=_rules(weight=QuantSpec(w, symmetric=False, granularity=PerChannel(), observer="pct_search"),
                     act=search,
                     softmax=QuantSpec(a, True, scheme="log_sqrt2", observer="pct_search", strict=strict),
                     image=QuantSpec(8, symmetric=False, observer="pct_search")),
        transforms=(Transform("repq", (("round_zero_point", strict),)),),
        name=f"repq{'' if strict else '_faithful'}-w{w}a{a}")


def ptq4vit(w: int, a: int) -> QuantConfig:
    """PTQ4ViT (Yuan et al., ECCV 2022): Hessian-guided search and twin-uniform softmax / post-GELU."""
    return QuantConfig(
        rules=_rules(weight=QuantSpec(w, True, PerChannel()), act=QuantSpec(a, symmetric=False),
                     softmax=_twin(a, signed=False), post_gelu=_twin(a)),
        transforms=(Transform("hessian"),), name=f"ptq4vit-w{w}a{a}")


def fqvit(w: int, a: int) -> QuantConfig:
    """FQ-ViT (Lin et al., IJCAI 2022): power-of-two factor after LayerNorm and a log2 softmax."""
    return QuantConfig(
        rules=_rules(weight=QuantSpec(w, True, PerChannel()), act=QuantSpec(a, symmetric=False),
                     softmax=QuantSpec(a, True, scheme="log2"),
                     post_ln=QuantSpec(a, symmetric=False, granularity=PerChannel(), observer="ptf")),
        name=f"fqvit-w{w}a{a}")


def smoothquant(w: int, a: int, alpha: float = 0.5) -> QuantConfig:
    """SmoothQuant (Xiao et al., ICML 2023) on the LayerNorm -> Linear pairs, min-max scales elsewhere."""
    return QuantConfig(
        rules=_rules(weight=QuantSpec(w, True, PerChannel()), act=QuantSpec(a, symmetric=False),
                     softmax=QuantSpec(a, True)),
        transforms=(Transform("smoothquant", (("alpha", alpha),)),), name=f"smoothquant-w{w}a{a}")


def best(w: int, a: int) -> QuantConfig:
    """vitq's best combination: RepQ-ViT (percentile-search scales, post-LayerNorm reparameterization, log-sqrt2
    softmax), PTQ4ViT's twin-uniform post-GELU quantizer, and PTQ4ViT's Hessian-guided search of the Linear
    weight scales (the activation scales keep the percentile search, which held accuracy better here).

    At 3 activation bits or fewer the softmax output takes PTQ4ViT's twin-uniform quantizer instead: 2^3 log-sqrt2
    levels reach only 3.5 octaves below the largest probability (``max / 11``), so the many attention weights
    below that (1/65 on average over 65 tokens) all become zero; twin-uniform keeps a fine range for them."""
    c = repq(w, a)
    rules = [QuantRule("*.mlp.fc2.input_quantizer", _twin(a))]
    if a <= 3:
        rules.append(QuantRule("*.matmul_av.a_quantizer", _twin(a, signed=False)))
    return QuantConfig(rules=tuple(rules) + c.rules,
                       transforms=c.transforms + (Transform("hessian", (("inputs", False),)),), name=f"best-w{w}a{a}")


def best_recon(w: int, a: int) -> QuantConfig:
    """``best``, then block reconstruction (:mod:`vitq.algorithms.reconstruct`, default settings) before freeze."""
    c = best(w, a)
    return replace(c, transforms=c.transforms + (Transform("reconstruct"),), name=f"best_recon-w{w}a{a}")


def qdrop(w: int, a: int, drop_prob: float = 0.5) -> QuantConfig:
    """QDrop (Wei et al., ICLR 2022; ``drop_prob=0`` is BRECQ, Li et al., ICLR 2021): MSE-searched uniform scales
    (per-channel weights, per-tensor activations), then block reconstruction with activation dropping."""
    c = uniform(w, a, a_observer="mse", w_observer="mse")
    name = "qdrop" if drop_prob > 0 else "brecq"
    return replace(c, transforms=(Transform("reconstruct", (("drop_prob", drop_prob),)),), name=f"{name}-w{w}a{a}")


def fp8(w: int = 8, a: int = 8, weight_granularity=PerChannel()) -> QuantConfig:
    """FP8 (e4m3) weights (per output channel by default) and Linear/patch-embedding inputs per tensor; attention
    stays float. ``fp8_tensor`` uses one weight scale per tensor (and a fused qkv), which runs on the
    tensor-wise scaled GEMM."""
    if (w, a) != (8, 8):
        raise VitqError("the fp8 presets are 8-bit only (e4m3): drop --w-bits/--a-bits")
    per_tensor = isinstance(weight_granularity, PerTensor)
    rules = (QuantRule("*weight_quantizer", QuantSpec(8, True, weight_granularity, scheme="fp8_e4m3"), "weight"),
             QuantRule("*output_quantizer", None),
             QuantRule("*.matmul_*", None),
             QuantRule("*[qkv]_quantizer", None),
             QuantRule("*input_quantizer", QuantSpec(8, True, PerTensor(), scheme="fp8_e4m3")))
    return QuantConfig(rules=rules, qkv="fused" if per_tensor else "split",
                       name="fp8_tensor" if per_tensor else "fp8")


METHODS: dict[str, Callable[..., QuantConfig]] = {
    "repq": repq, "repq_faithful": lambda w, a: repq(w, a, strict=False), "ptq4vit": ptq4vit, "fqvit": fqvit,
    "smoothquant": smoothquant, "best": best, "best_recon": best_recon, "qdrop": qdrop,
    "brecq": lambda w, a: qdrop(w, a, drop_prob=0.0), "fp8": fp8,
    "fp8_tensor": lambda w, a: fp8(w, a, weight_granularity=PerTensor())}
DEFAULT_BITS = {"fp8": (8, 8), "fp8_tensor": (8, 8)}  # method presets default to W4A4 otherwise
UNIFORM = {"w8a8": (8, 8), "w6a6": (6, 6), "w4a8": (4, 8), "w4a4": (4, 4)}  # named; any wXaY works too


def preset(name: str, w_bits: Optional[int] = None, a_bits: Optional[int] = None, **kwargs) -> QuantConfig:
    """A named preset, optionally with other bits: a uniform min-max one (``w8a8``, ``w6a6``, ``w4a8``, ``w4a4``,
    or ``wXaY`` for any bits 2..8), or a method preset (``repq``, ``repq_faithful``, ``ptq4vit``, ``fqvit``,
    ``smoothquant``, ``best``, ``best_recon``, ``qdrop``, ``brecq``: W4A4 by default; ``fp8``, ``fp8_tensor``: 8 bits
    only). Keyword arguments of the
    uniform presets go to :func:`uniform` (granularities, observers, ``qkv``)."""
    if not isinstance(name, str):
        raise VitqError(f"a preset name is a string, not {name!r}")
    if name in METHODS:
        if kwargs:
            raise VitqError(f"preset {name!r} takes only bit widths, not {sorted(kwargs)}")
        w0, a0 = DEFAULT_BITS.get(name, (4, 4))
        return METHODS[name](w_bits or w0, a_bits or a0)
    m = re.fullmatch(r"w(\d)a(\d)", name)
    if not m:
        raise VitqError(f"unknown preset {name!r} (known: {', '.join([*UNIFORM, *METHODS])}, or wXaY)")
    bits = (int(m.group(1)), int(m.group(2)))
    w, a = w_bits or bits[0], a_bits or bits[1]
    return uniform(w, a, name=name if (w, a) == bits else None, **kwargs)


def resolve_config(config) -> QuantConfig:
    """Accept a QuantConfig, a preset name, a dict, or a path to a YAML/JSON recipe."""
    if isinstance(config, QuantConfig):
        return config
    if isinstance(config, dict):
        return QuantConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        s = str(config)
        if s.lower().endswith((".yaml", ".yml", ".json")):
            return QuantConfig.from_file(s)
        return preset(s)
    raise VitqError(f"cannot use {type(config).__name__} as a quantization config")
