"""convert(model, config): swap float layers for quant layers by type, then give each quantizer its spec by rule.

Dispatch is by exact type through one :class:`Registry` (``nn.Linear -> QuantLinear``, ``nn.Conv2d ->
QuantConv2d``, timm ``Attention -> QuantAttention``); users extend a copy (``reg = default_registry();
reg.register(MyAttention, factory)``) and pass it as ``convert(..., registry=reg)``: no global state. Per-quantizer
settings come from the config's ordered glob rules (first match wins), never from substring tests in code.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterator, Optional

from torch import nn

from .config import QuantConfig
from .recipes import resolve_config
from .errors import VitqError
from .nn import QuantAttention, QuantConv2d, QuantLinear, QuantModule
from .quantizer import Quantizer

Factory = Callable[[nn.Module, QuantConfig], nn.Module]


class Registry:
    """Maps a float module type to a factory ``(module, config) -> quant module`` (exact type match)."""

    def __init__(self):
        self._factories: dict[type, Factory] = {}

    def register(self, float_type: type, factory: Factory) -> None:
        """Convert modules of exactly ``float_type`` with ``factory``."""
        self._factories[float_type] = factory

    def lookup(self, module: nn.Module) -> Optional[Factory]:
        return self._factories.get(type(module))


def default_registry() -> Registry:
    """The built-in conversions: Linear, Conv2d and timm's Attention."""
    from timm.layers.attention import Attention

    r = Registry()
    r.register(nn.Linear, lambda m, cfg: QuantLinear.from_float(m))
    r.register(nn.Conv2d, lambda m, cfg: QuantConv2d.from_float(m))
    r.register(Attention, lambda m, cfg: QuantAttention.from_float(m, qkv_mode=cfg.qkv))
    return r


def is_converted(model: nn.Module) -> bool:
    """True when ``model`` already contains vitq layers."""
    return any(isinstance(m, (QuantModule, Quantizer)) for m in model.modules())


def named_quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    """Every quantizer of ``model`` with its dotted name."""
    for name, m in model.named_modules():
        if isinstance(m, Quantizer):
            yield name, m


def quant_modules(model: nn.Module) -> Iterator[tuple[str, QuantModule]]:
    """Every vitq layer of ``model`` with its dotted name."""
    for name, m in model.named_modules():
        if isinstance(m, QuantModule):
            yield name, m


def _swap(module: nn.Module, prefix: str, config: QuantConfig, registry: Registry) -> None:
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        if config.excludes(name):
            continue
        factory = registry.lookup(child)
        if factory is not None:
            setattr(module, child_name, factory(child, config))
        else:
            _swap(child, name, config, registry)


def convert(model: nn.Module, config="w8a8", registry: Optional[Registry] = None,
            inplace: bool = False) -> nn.Module:
    """A fake-quant copy of ``model`` (quantizers off) configured by ``config``.

    ``config`` is a :class:`QuantConfig`, a preset name or a recipe path. The float model is left untouched unless
    ``inplace``. Converting a model that already holds vitq layers is refused: it would quantize twice.
    """
    config = resolve_config(config)
    if is_converted(model):
        raise VitqError("model is already converted: convert the float model, not a quantized one")
    registry = registry or default_registry()
    if not inplace:
        model = copy.deepcopy(model)
    _swap(model, "", config, registry)
    for name, q in named_quantizers(model):
        q.configure(config.spec_for(name))
    for _, m in quant_modules(model):
        if hasattr(m, "finalize_config"):
            m.finalize_config()
    model.vitq_config = config
    return model.eval()
