"""vitq: post-training quantization for Vision Transformers.

    import vitq
    qmodel = vitq.quantize(model, "w8a8", calib=calib_loader)   # convert + calibrate + freeze
    print(vitq.evaluate(qmodel, val_loader, float_model=model))
    vitq.save(qmodel, "out/")                                   # vitq.load("out/") is bit-exact
"""
from .analysis import analyze
from .calibrate import calibrate, calibration, freeze, is_frozen, set_quantizers
from .config import QuantConfig, QuantRule, QuantSpec, Transform
from .convert import Registry, convert, default_registry, named_quantizers, quant_modules
from .errors import VitqError
from .evaluate import evaluate
from .mixed import mixed_precision
from .granularity import PerBlock, PerChannel, PerGroup, PerHead, PerTensor, PerToken
from .models import load_model
from .pipeline import loaders, quantize
from .quantizer import Quantizer
from .recipes import preset
from .serialize import load, save

__version__ = "0.1.0"

__all__ = [
    "analyze", "PerBlock", "PerChannel", "PerGroup", "PerHead", "PerTensor", "PerToken", "QuantConfig", "QuantRule",
    "QuantSpec", "Quantizer", "Registry", "Transform", "VitqError", "calibrate", "calibration", "convert",
    "default_registry", "evaluate", "freeze", "is_frozen", "load", "load_model", "loaders", "mixed_precision", "named_quantizers",
    "preset", "quant_modules", "quantize", "save", "set_quantizers",
]
