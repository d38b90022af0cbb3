"""Block reconstruction: AdaRound weight rounding and learned activation step sizes, unit by unit, from BRECQ
(Li et al., ICLR 2021) and QDrop (Wei et al., ICLR 2022), on top of AdaRound (Nagel et al., ICML 2020).

An ``after`` transform (between the observer pass and ``freeze()``). The model is cut into units, reconstructed
in order:

* ``granularity="block"`` (default): the patch embedding (``model.patch_embed``), each transformer block
  (``model.blocks[i]``: attention and MLP with their residuals), and the head unit ``norm + head`` (``model.norm``,
  pooling, ``fc_norm``, ``model.head``; its input is the last block's output, its output the logits);
* ``granularity="layer"``: each QuantLinear / QuantConv2d on its own (for comparison).

For each unit, the float model (every quantizer off, the original float weights) gives the unit's float input and
output on the calibration images; the unit's quantized input is what the model produces with quantization on up to
the unit (the units before it already reconstructed). Only the current unit's tensors are kept. The unit is then
optimized for ``iters`` Adam steps on random mini-batches of ``batch_size`` samples:

* weights (every QuantLinear/QuantConv2d of the unit with an affine weight grid): AdaRound soft rounding
  ``w = s * (clamp(floor(w/s) + h(V) + z, qmin, qmax) - z)``, ``h(V) = clamp(1.2 sigmoid(V) - 0.1, 0, 1)``, V
  initialized so that ``h(V)`` is the fractional part; regularizer ``reg_weight * sum(1 - |2h(V) - 1|^beta)``
  with beta annealed linearly from 20 to 2 after a ``warmup`` (20%) of the iterations, in which it is off
  (:func:`beta_schedule`). The soft weight enters the layer's forward through
  ``torch.nn.utils.parametrize``, removed afterwards. ``weight_rounding=False`` keeps nearest rounding instead.
  The weight grid (scale, zero point) is the weight quantizer's own, fixed before as :mod:`.gptq` does (a search
  such as ``hessian`` that ran earlier in the recipe is kept);
* activation step sizes (``step_sizes=True``): every activation quantizer of the unit that is enabled, uniform
  (affine) and static (Linear inputs, Q, K, V, a uniform softmax output, the image quantizer) learns its scale
  with LSQ gradients (``Quantizer.learn``) at ``lr`` with a cosine decay; log2/log-sqrt2 and twin-uniform
  quantizers (and dynamic per-token ones) stay fixed at their calibrated qparams, quantizing as they will after
  freeze;
* QDrop (``drop_prob``): the unit input is mixed **per element** from the quantized and the float input (float
  with probability ``drop_prob``), and every activation quantizer of the unit is bypassed (float) per element
  with probability ``drop_prob``, by forward hooks local to this module. ``drop_prob=0`` is BRECQ.

Loss: ``loss="mse"``: the squared error of the unit output summed over dim 1 and averaged over the other dims
(BRECQ/QDrop's ``lp_loss``, which fixes the balance with the regularizer); ``loss="fisher"``: the squared error
weighted by the squared gradient of the float model's cross-entropy (against its own argmax) w.r.t. the unit
output, from one backward pass per unit (BRECQ).

After the last step rounding is hardened (``h(V) >= 0.5`` rounds up), the on-grid weight is written into
``layer.weight`` (so ``freeze()`` stores exactly these codes and never rounds again) and the learned scales are
fixed (``Quantizer.end_learning``). A unit whose reconstruction error on all the calibration data (quantized
input, no drop) ends above its starting error (nearest rounding, calibrated scales) is reverted to that start:
reconstruction never makes a unit worse. Every enabled quantizer is left ``off`` with fixed qparams (the
observed ones are solved first), so ``freeze()`` only enables them. Deterministic under ``seed`` (default: torch's initial seed, i.e. the CLI's ``--seed``); runs on the
device of the calibration batches.

Defaults: ``iters=200`` steps per unit, ``batch_size=32``, ``lr=4e-5`` (scales, QDrop's), ``round_lr=1e-2`` (V:
ten times AdaRound's 1e-3, since 200 steps instead of its 10-20k would barely move V), ``reg_weight=0.01``,
``warmup=0.2``, ``drop_prob=0.5``. They are sized for CPU: the shared CIFAR-10 ViT-Tiny (14 units) reconstructs
with 256 calibration images in about 15 minutes on a busy 2-core CPU (run with ``OMP_NUM_THREADS=1`` there, as
thread oversubscription slows small kernels by an order of magnitude); on a GPU raise ``iters`` (QDrop uses 20k,
with ``round_lr=1e-3``). Each unit's inputs are captured by running the model from the images up to the unit
(quadratic in the number of units, but cheap next to the optimization).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import VitqError
from ..nn.base import QuantWeightModule
from ..progress import progress
from ..quantizer import Quantizer
from .adaround import SoftRound, beta_schedule

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


def _weight_ok(m: nn.Module) -> bool:
    if not isinstance(m, QuantWeightModule) or "weight" not in m._parameters:
        return False
    q = m.weight_quantizer
    return q.enabled and q.scheme.affine and not q.spec.granularity.dynamic


def _learnable(q: Quantizer) -> bool:
    return q.enabled and q.has_qparams and q.scheme.affine and not q.spec.granularity.dynamic


def _act_quantizers(modules: Sequence[nn.Module]) -> list[Quantizer]:
    seen, out = set(), []
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, Quantizer) and not m.is_weight and m.enabled and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


class _Unit:
    """One reconstruction unit: ``fn`` maps its input to its output; its input is captured by a pre-hook on
    ``in_module``, its output by a hook on ``out_module`` (None: the model's output)."""

    def __init__(self, name: str, fn: Callable, in_module: nn.Module, out_module: Optional[nn.Module],
                 modules: Sequence[nn.Module]):
        self.name, self.fn, self.in_module, self.out_module, self.modules = name, fn, in_module, out_module, modules


def _units(model: nn.Module, granularity: str) -> list[_Unit]:
    if granularity == "layer":
        return [_Unit(n, m, m, m, [m]) for n, m in model.named_modules() if isinstance(m, QuantWeightModule)]
    if granularity != "block":
        raise VitqError(f"reconstruct granularity must be 'block' or 'layer', not {granularity!r}")
    for attr in ("patch_embed", "blocks", "norm", "head", "forward_head"):
        if not hasattr(model, attr):
            raise VitqError(f"block reconstruction needs a timm VisionTransformer (no model.{attr}); "
                            "use granularity='layer'")
    units = [_Unit("patch_embed", model.patch_embed, model.patch_embed, model.patch_embed, [model.patch_embed])]
    units += [_Unit(f"blocks.{i}", b, b, b, [b]) for i, b in enumerate(model.blocks)]
    head_mods = [m for m in (model.norm, getattr(model, "fc_norm", None), model.head) if isinstance(m, nn.Module)]
    units.append(_Unit("norm+head", lambda x: model.forward_head(model.norm(x)), model.norm, None, head_mods))
    return units


def _capture(model: nn.Module, unit: _Unit, batches: Sequence[torch.Tensor], output: bool = True,
             grad: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(inputs, outputs, dLoss/doutputs) of ``unit`` over ``batches``, each concatenated on dim 0."""
    ins, outs, grads = [], [], []
    hooks = [unit.in_module.register_forward_pre_hook(lambda _m, args: ins.append(args[0].detach()))]
    stop_early = not output and not grad

    if stop_early:
        def stop(_m, _args):
            raise _Stop
        hooks.append(unit.in_module.register_forward_pre_hook(stop))
    elif unit.out_module is not None:
        def on_out(_m, _args, out):
            outs.append(out.detach())
            if grad:
                out.register_hook(lambda g: grads.append(g.detach()))
            else:
                raise _Stop  # the rest of the model is not needed
        hooks.append(unit.out_module.register_forward_hook(on_out))
    try:
        for x in batches:
            try:
                if grad:
                    with torch.enable_grad():
                        x = x.detach().clone().requires_grad_(True)
                        logits = model(x)
                        if unit.out_module is None:
                            outs.append(logits.detach())
                            logits.register_hook(lambda g: grads.append(g.detach()))
                        F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum").backward()
                else:
                    with torch.no_grad():
                        logits = model(x)
                    if output and unit.out_module is None:
                        outs.append(logits.detach())
            except _Stop:
                pass
    finally:
        for h in hooks:
            h.remove()
    cat = lambda t: torch.cat(t) if t else None  # noqa: E731
    return cat(ins), cat(outs), cat(grads)


@contextmanager
def _float_weights(originals: dict):
    """Put the original float weights back for the duration (the float model's targets)."""
    saved = {}
    with torch.no_grad():
        for layer, w in originals.items():
            saved[layer] = layer.weight.detach().clone()
            layer.weight.copy_(w)
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, w in saved.items():
                layer.weight.copy_(w)


@contextmanager
def _quantized(quantizers: Sequence[Quantizer]):
    """Every activation quantizer with fixed qparams quantizes for the duration."""
    on = [q for q in quantizers if q.has_qparams and q.state == "off"]
    for q in on:
        q.enable()
    try:
        yield
    finally:
        for q in on:
            q.disable()


def _rec_loss(out: torch.Tensor, target: torch.Tensor, g: Optional[torch.Tensor]) -> torch.Tensor:
    err = (out - target).pow(2)
    if g is not None:
        err = err * g.pow(2)
    return err.sum(1).mean() if err.ndim > 1 else err.mean()


ARG_LIMITS = {"iters": (0, None), "lr": (1e-12, None), "round_lr": (1e-12, None), "drop_prob": (0.0, 1.0),
              "granularity": {"block", "layer"}, "loss": {"mse", "fisher"}, "batch_size": (1, None),
              "seed": (0, 2 ** 63 - 1), "reg_weight": (0.0, None), "warmup": (0.0, 1.0)}


def apply(model: nn.Module, batches: Sequence[torch.Tensor], iters: int = 200, lr: float = 4e-5,
          weight_rounding: bool = True, step_sizes: bool = True, drop_prob: float = 0.5, granularity: str = "block",
          loss: str = "mse", batch_size: int = 32, seed: Optional[int] = None, show_progress: bool = False,
          round_lr: float = 1e-2, reg_weight: float = 0.01, warmup: float = 0.2) -> list[dict]:
    """Reconstruct ``model`` unit by unit (see module docstring). Returns one dict per unit: ``name``,
    ``loss_start`` / ``loss_end`` (mean squared error, Fisher-weighted for ``loss="fisher"``, of the unit output
    on all calibration data with quantized input), ``reverted`` and ``history`` (the training loss per step)."""
    if loss not in ("mse", "fisher"):
        raise VitqError(f"reconstruct loss must be 'mse' or 'fisher', not {loss!r}")
    if not 0.0 <= drop_prob <= 1.0:
        raise VitqError(f"drop_prob must be in [0, 1], got {drop_prob}")
    iters, batch_size = int(iters), int(batch_size)
    batches = [b for b in batches if b.shape[0] > 0]
    if not batches:
        raise VitqError("reconstruct needs calibration images")
    device = batches[0].device
    units = _units(model, granularity)
    all_act = _act_quantizers([model])
    # 1. fix the qparams: every observed (or dynamic) activation quantizer, and every weight grid (as gptq does)
    for q in all_act:
        if not q.has_qparams and (q.has_observations or q.spec.granularity.dynamic):
            q.solve()
    weight_layers = [m for m in model.modules() if _weight_ok(m)]
    for layer in weight_layers:
        layer.fix_weight_grid()
    originals = {m: m.weight.detach().clone() for m in weight_layers}
    seed = torch.initial_seed() if seed is None else int(seed)  # the CLI's --seed when not given
    cpu_gen = torch.Generator().manual_seed(seed)
    dev_gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    frozen_params = [p for p in model.parameters() if p.requires_grad]
    for p in frozen_params:
        p.requires_grad_(False)
    stats = []
    try:
        for unit in units:
            stats.append(_reconstruct_unit(model, unit, batches, originals, all_act, iters, lr, round_lr,
                                           weight_rounding, step_sizes, drop_prob, loss, batch_size, reg_weight,
                                           warmup, cpu_gen, dev_gen, show_progress))
            s = stats[-1]
            log.info("reconstruct %s: loss %.4g -> %.4g%s", s["name"], s["loss_start"], s["loss_end"],
                     " (reverted)" if s["reverted"] else "")
    finally:
        for p in frozen_params:
            p.requires_grad_(True)
        model.train(was_training)
    return stats


def _reconstruct_unit(model, unit: _Unit, batches, originals, all_act, iters, lr, round_lr, weight_rounding,
                      step_sizes, drop_prob, loss, batch_size, reg_weight, warmup, cpu_gen, dev_gen,
                      show_progress) -> dict:
    # float targets (original float weights, every quantizer off), then the quantized input
    with _float_weights(originals):
        f_in, f_out, g = _capture(model, unit, batches, output=True, grad=(loss == "fisher"))
    with _quantized(all_act):
        q_in, _, _ = _capture(model, unit, batches, output=False)
    if loss == "fisher":
        # BRECQ's gradients are tiny; normalize their mean square to 1 so the regularizer weight keeps its balance
        g = g / g.pow(2).mean().sqrt().clamp_min(1e-12)

    layers = [m for u in unit.modules for m in u.modules() if _weight_ok(m)]
    acts = _act_quantizers(unit.modules)
    learners = [q for q in acts if step_sizes and _learnable(q)]
    fixed = [q for q in acts if q not in learners and q.has_qparams]
    rounders = {}
    for layer in layers:
        r = SoftRound(layer, learn=weight_rounding)
        parametrize.register_parametrization(layer, "weight", r, unsafe=True)
        rounders[layer] = r
    for q in learners:
        q.learn()
    for q in fixed:
        q.enable()
    drop = {"on": False}

    def drop_hook(_m, args, out):
        if not drop["on"] or drop_prob <= 0:
            return out
        keep_float = torch.rand(out.shape, generator=dev_gen, device=out.device) < drop_prob
        return torch.where(keep_float, args[0], out)

    hooks = [q.register_forward_hook(drop_hook) for q in acts]
    n = q_in.shape[0]

    def evaluate(mode: str) -> float:
        for r in rounders.values():
            r.mode = mode
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, n, 256):
                out = unit.fn(q_in[i:i + 256])
                err = (out - f_out[i:i + 256]).pow(2)
                if g is not None:
                    err = err * g[i:i + 256].pow(2)
                total += float(err.double().sum())
                count += err.numel()
        return total / count

    history: list[float] = []
    reverted = False
    final_mode = "nearest"  # what the layers keep if anything below fails
    try:
        loss_start = evaluate("nearest")
        v_params = [r.v for r in rounders.values()] if weight_rounding else []
        s_params = [q.learned_scale for q in learners]
        if iters > 0 and (v_params or s_params):
            for r in rounders.values():
                r.mode = "soft" if weight_rounding else "nearest"
            opt_v = torch.optim.Adam(v_params, lr=round_lr) if v_params else None
            opt_s = torch.optim.Adam(s_params, lr=lr) if s_params else None
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, T_max=iters, eta_min=0.0) if opt_s else None
            bar = progress(range(iters), desc=f"reconstruct {unit.name}", disable=not show_progress)
            drop["on"] = True
            with torch.enable_grad():
                for it in bar:
                    idx = torch.randperm(n, generator=cpu_gen)[:batch_size].to(q_in.device)
                    x = q_in[idx]
                    if drop_prob > 0:
                        mix = torch.rand(x.shape, generator=dev_gen, device=x.device) < drop_prob
                        x = torch.where(mix, f_in[idx], x)
                    rec = _rec_loss(unit.fn(x), f_out[idx], g[idx] if g is not None else None)
                    total = rec
                    beta = beta_schedule(it, iters, warmup)
                    if v_params and beta is not None:
                        total = total + reg_weight * sum(r.regularizer(beta) for r in rounders.values())
                    for o in (opt_v, opt_s):
                        if o is not None:
                            o.zero_grad(set_to_none=True)
                    total.backward()
                    for o in (opt_v, opt_s):
                        if o is not None:
                            o.step()
                    if sched is not None:
                        sched.step()
                    history.append(float(rec.detach()))
                    if show_progress and it % 20 == 0:
                        bar.set_postfix(loss=f"{history[-1]:.4g}")
            drop["on"] = False
        loss_end = evaluate("hard" if weight_rounding else "nearest")
        if loss_end > loss_start:  # never worse than where it started
            reverted = True
            for q in learners:
                q.reset_learning()
            loss_end = evaluate("nearest")
        if weight_rounding and not reverted:
            final_mode = "hard"
    finally:
        drop["on"] = False
        for h in hooks:
            h.remove()
        finals = {}
        with torch.no_grad():
            for layer, r in rounders.items():
                finals[layer] = r.weight(final_mode).detach().clone()
        for layer in rounders:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            with torch.no_grad():
                layer.weight.copy_(finals[layer])
        for q in learners:
            q.end_learning()
        for q in fixed:
            q.disable()
    return {"name": unit.name, "loss_start": loss_start, "loss_end": loss_end, "reverted": reverted,
            "history": history, "samples": n}
