"""One probing pass: float and quantized model on the same batches, hooks at every quantizer, layer and block.

For each probe batch the float side (the :class:`Mixer`, all layers float) runs first and its tensors at every
quantizer input, quant-layer input/output and block output are held for that batch; then the quantized model runs
and is compared against them:

* quantizer, **local** error: the frozen quantizer applied to the float tensor at its input;
* quantizer, **accumulated** error: the quantizer's output in the fully quantized model vs the float tensor;
* layer, local: the layer run quantized on its float input (and its float/fake-quant wall time);
* layer / block, accumulated: outputs of the fully quantized model vs float.

It also collects value samples for histograms, per-channel min/max of the qkv and fc1 inputs, and the error of
per-tensor, per-channel and per-token scales for every activation quantizer (calibrated on the calibration set).
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Iterable

import torch
from torch import nn

from ..convert import named_quantizers
from ..granularity import PerChannel, PerTensor, PerToken
from ..quantizer import Quantizer
from .metrics import ErrorStats
from .mixer import Mixer

# distribution kinds: label -> quantizer-name suffix whose *input* is that tensor
DIST_POINTS = {
    "Q": "attn.q_quantizer", "K": "attn.k_quantizer", "V": "attn.v_quantizer",
    "qkv input (post-LN1)": "attn.qkv.input_quantizer", "fc1 input (post-LN2)": "mlp.fc1.input_quantizer",
    "post-GELU (fc2 input)": "mlp.fc2.input_quantizer", "post-softmax": "attn.matmul_av.a_quantizer",
}
CHANNEL_POINTS = {"qkv input": "attn.qkv.input_quantizer", "fc1 input": "mlp.fc1.input_quantizer"}
SAMPLES_PER_TENSOR = 100_000


class _Capture:
    """Forward hooks that record tensors by name for the current batch."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.handles = []

    def on_input(self, module: nn.Module, key: str, all_args: bool = False):
        """Record the first positional input (or, with ``all_args``, the whole tuple of them)."""
        def hook(m, args, key=key):
            self.tensors[key] = tuple(a.detach() for a in args) if all_args else args[0].detach()
        self.handles.append(module.register_forward_pre_hook(hook))

    def on_output(self, module: nn.Module, key: str):
        self.handles.append(module.register_forward_hook(
            lambda m, args, out, key=key: self.tensors.__setitem__(key, out.detach())))

    def remove(self):
        for h in self.handles:
            h.remove()


def _block_names(model: nn.Module) -> list[str]:
    blocks = getattr(model, "blocks", None)
    return [f"blocks.{i}" for i in range(len(blocks))] if blocks is not None else []


def _granularity_variants(q: Quantizer) -> dict[str, Quantizer]:
    """Per-tensor / per-channel (static, same observer) and per-token (dynamic) copies of a quantizer's spec."""
    out = {}
    for label, g in (("per_tensor", PerTensor()), ("per_channel", PerChannel()), ("per_token", PerToken())):
        if g.dynamic and not q.scheme.dynamic:
            continue  # log, twin and fp8 quantizers are static only
        out[label] = Quantizer(replace(q.spec, granularity=g), channel_axis=q.channel_axis)
    return out


@torch.no_grad()
def calibrate_variants(mixer: Mixer, qmodel: nn.Module, calib: Iterable) -> dict[str, dict[str, Quantizer]]:
    """For every enabled static activation quantizer: per-tensor, per-channel and per-token variants, the static
    ones calibrated on the float model's tensors at that point over the calibration batches."""
    variants = {name: _granularity_variants(q) for name, q in named_quantizers(qmodel)
                if q.enabled and not q.is_weight and q.has_qparams}
    mods = dict(mixer.model.named_modules())
    cap = _Capture()
    for name in variants:
        cap.on_input(mods[name], name)
    for v in variants.values():
        for q in v.values():
            q.observe()
    try:
        for batch in calib:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            cap.tensors.clear()
            mixer.model(x)
            for name, v in variants.items():
                t = cap.tensors.get(name)
                if t is None:
                    continue
                for q in v.values():
                    q(t)
    finally:
        cap.remove()
    for v in variants.values():
        for q in v.values():
            q.solve()
            q.enable()
    return variants


@torch.no_grad()
def probe(mixer: Mixer, qmodel: nn.Module, batches: Iterable, variants: dict[str, dict[str, Quantizer]],
          seed: int = 0) -> dict:
    """Run the probing pass (see module docstring) and return plain-data results."""
    fmods = dict(mixer.model.named_modules())
    qmods = dict(qmodel.named_modules())
    qquant = dict(named_quantizers(qmodel))
    quant_names = [n for n, q in qquant.items() if q.enabled and not q.is_weight and q.has_qparams]
    all_quant_names = [n for n, _ in named_quantizers(mixer.model) if not _.is_weight]
    layer_names = mixer.layer_names()
    blocks = _block_names(mixer.model)

    fcap, qcap = _Capture(), _Capture()
    for n in all_quant_names:
        fcap.on_input(fmods[n], n)
    for n in quant_names:
        qcap.on_output(qmods[n], n)
    for n in layer_names:
        fcap.on_input(fmods[n], n + ":in", all_args=True)
        fcap.on_output(fmods[n], n + ":out")
        qcap.on_output(qmods[n], n + ":out")
    for n in blocks:
        fcap.on_output(fmods[n], n + ":out")
        qcap.on_output(qmods[n], n + ":out")

    q_local, q_accum = defaultdict(ErrorStats), defaultdict(ErrorStats)
    l_local, l_accum, b_accum = defaultdict(ErrorStats), defaultdict(ErrorStats), defaultdict(ErrorStats)
    gran = defaultdict(lambda: defaultdict(ErrorStats))
    t_float, t_quant = defaultdict(float), defaultdict(float)
    samples: dict[str, list[torch.Tensor]] = defaultdict(list)
    ch_min: dict[str, torch.Tensor] = {}
    ch_max: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)
    logits_f, logits_q = [], []
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            fcap.tensors.clear()
            qcap.tensors.clear()
            logits_f.append(mixer.model(x))
            logits_q.append(qmodel(x))
            ft, qt = fcap.tensors, qcap.tensors
            for n in quant_names:
                ref = ft[n]
                q_local[n].update(ref, qquant[n](ref))
                q_accum[n].update(ref, qt[n])
                for label, vq in variants.get(n, {}).items():
                    gran[n][label].update(ref, vq(ref))
            for n in layer_names:
                ref_in, ref_out = ft[n + ":in"], ft[n + ":out"]
                module = fmods[n]
                t0 = time.perf_counter()
                module(*ref_in)
                t_float[n] += time.perf_counter() - t0
                with mixer.quantized([n]):
                    t0 = time.perf_counter()
                    local_out = module(*ref_in)
                    t_quant[n] += time.perf_counter() - t0
                l_local[n].update(ref_out, local_out)
                l_accum[n].update(ref_out, qt[n + ":out"])
            for n in blocks:
                b_accum[n].update(ft[n + ":out"], qt[n + ":out"])
            for b in blocks:
                for label, suffix in DIST_POINTS.items():
                    t = ft.get(f"{b}.{suffix}")
                    if t is not None:
                        flat = t.reshape(-1)
                        k = min(flat.numel(), SAMPLES_PER_TENSOR // 4)
                        samples[f"{b}|{label}"].append(flat[torch.randint(flat.numel(), (k,), generator=gen)])
                for label, suffix in CHANNEL_POINTS.items():
                    t = ft.get(f"{b}.{suffix}")
                    if t is not None:
                        key = f"{b}|{label}"
                        lo, hi = t.reshape(-1, t.shape[-1]).amin(0), t.reshape(-1, t.shape[-1]).amax(0)
                        ch_min[key] = lo if key not in ch_min else torch.minimum(ch_min[key], lo)
                        ch_max[key] = hi if key not in ch_max else torch.maximum(ch_max[key], hi)
    finally:
        fcap.remove()
        qcap.remove()

    return {
        "quantizers": {n: {"local": q_local[n].to_dict(), "accumulated": q_accum[n].to_dict(),
                           "spec": qquant[n].spec.to_dict()} for n in quant_names},
        "layers": {n: {"type": type(fmods[n]).__name__, "local": l_local[n].to_dict(),
                       "accumulated": l_accum[n].to_dict(), "ms_float": 1000 * t_float[n],
                       "ms_fakequant": 1000 * t_quant[n]} for n in layer_names},
        "blocks": {n: b_accum[n].to_dict() for n in blocks},
        "granularity": {n: {label: s.to_dict() for label, s in g.items()} for n, g in gran.items()},
        "samples": {k: torch.cat(v)[:SAMPLES_PER_TENSOR] for k, v in samples.items()},
        "channel_minmax": {k: (ch_min[k], ch_max[k]) for k in ch_min},
        "logits": (torch.cat(logits_f), torch.cat(logits_q)),
    }


def weight_stats(mixer: Mixer) -> dict[str, dict]:
    """Weight SQNR of every quantized layer (float weight vs its dequantized integer codes)."""
    out = {}
    for name, (fw, qw) in mixer.weight_pairs().items():
        s = ErrorStats()
        s.update(fw, qw)
        out[name] = s.to_dict()
    return out
