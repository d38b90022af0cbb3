"""Quantizer: one tensor's quantization, with explicit states and frozen qparams stored as buffers.

States:

* ``off``:      identity (the float path). Every quantizer starts here after ``convert``.
* ``observe``:  identity, and the observer accumulates statistics (inside ``vitq.calibration(model)``).
* ``quantize``: fake quantization with the frozen scale and zero point (or, for a dynamic granularity such as
  per-token, with qparams solved from the input itself).

``freeze()`` solves the observer once and stores ``scale``, ``zero_point`` and ``qrange`` (qmin, qmax) as buffers,
so they travel with the state dict. A quantizer whose ``spec`` is None is disabled: it stays ``off`` forever.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from .config import QuantSpec
from .errors import VitqError
from .granularity import PerBlock
from .observers import Observer, make_observer
from .primitives import (FP8_MAX, dequantize, fake_quantize, fake_quantize_fp8, fake_quantize_log,
                         qparams_from_minmax, qrange, quantize, quantize_fp8)

STATES = ("off", "observe", "quantize")


class Quantizer(nn.Module):
    """Quantizes one tensor according to a :class:`QuantSpec` (see module docstring for the states)."""

    def __init__(self, spec: Optional[QuantSpec] = None, channel_axis: int = -1, is_weight: bool = False):
        super().__init__()
        self.spec = spec
        self.channel_axis = channel_axis
        self.is_weight = is_weight  # weights are observed and frozen by their module, not by calibration passes
        self.state = "off"
        self.observer: Optional[Observer] = None
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))
        self.register_buffer("qrange", torch.empty(0, dtype=torch.int32))  # [qmin, qmax] once frozen

    # ----- configuration -------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when this quantizer has a spec (is not left in float)."""
        return self.spec is not None

    @property
    def frozen(self) -> bool:
        """True once qparams are fixed (a dynamic quantizer is frozen when its qrange is set)."""
        return self.qrange.numel() == 2

    def configure(self, spec: Optional[QuantSpec]) -> None:
        """Set (or clear) the spec; only before freezing."""
        if self.frozen:
            raise VitqError("cannot reconfigure a frozen quantizer")
        self.spec = spec
        self.observer = None
        self.state = "off"

    def bind(self, num_heads: int) -> None:
        """Fill in the head count of a per-head/per-block granularity left open in the config."""
        g = self.spec.granularity if self.spec else None
        if isinstance(g, PerBlock) and g.num_blocks is None:
            self.spec = replace(self.spec, granularity=type(g)(num_heads, g.axis))

    def set_state(self, state: str) -> None:
        """Switch between ``off``, ``observe`` and ``quantize`` (disabled quantizers stay off)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        if not self.enabled:
            return
        if state == "observe":
            if self.frozen:
                raise VitqError("cannot calibrate a frozen quantizer: calibrate before freeze()")
            if self.observer is None and not self.spec.granularity.dynamic:
                self.observer = make_observer(self.spec, self.channel_axis)
        if state == "quantize" and not self.frozen:
            raise VitqError("quantizer is not frozen: run calibrate() and freeze() first")
        self.state = state

    # ----- solving -------------------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Solve qparams from the observer once and switch to ``quantize``. Raises if already frozen or unfed."""
        if not self.enabled:
            return
        if self.frozen:
            raise VitqError("quantizer is already frozen: quantizing twice is not allowed")
        scheme = self.spec.scheme
        if scheme in ("log2", "log_sqrt2", "twin_uniform") and (self.is_weight or self.spec.granularity.dynamic):
            raise VitqError(f"{scheme} quantizers are for static activations (e.g. the softmax output)")
        if scheme in ("twin_uniform", "fp8_e4m3") and self.spec.granularity.dynamic:
            raise VitqError(f"{scheme} quantizers need static (calibrated) scales")
        if self.spec.granularity.dynamic:
            qmin, qmax = qrange(self.spec.bits, self.spec.signed if self.spec.signed is not None
                                else self.spec.symmetric)
            self.qrange = torch.tensor([qmin, qmax], dtype=torch.int32)
        else:
            if self.observer is None or not self.observer.has_data:
                raise VitqError("quantizer saw no calibration data")
            scale, zp, qmin, qmax = self.observer.solve()
            self.scale, self.zero_point = scale, zp
            self.qrange = torch.tensor([qmin, qmax], dtype=torch.int32)
        self.observer = None
        self._range_cache = None
        self.state = "quantize"

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> None:
        """Fix qparams found by a calibration algorithm (a search, a reparameterization) instead of the observer.

        The quantizer counts as frozen from here on: calibration passes skip it and ``freeze()`` of its module only
        switches it to ``quantize``. The state stays ``off`` until then, so later calibration passes see float.
        """
        if not self.enabled:
            raise VitqError("cannot set qparams of a disabled quantizer")
        if self.frozen:
            raise VitqError("quantizer is already frozen: quantizing twice is not allowed")
        self.scale = scale.detach().float().clone()
        self.zero_point = zero_point.detach().float().clone()
        self.qrange = torch.tensor([qmin, qmax], dtype=torch.int32)
        self.observer = None
        self._range_cache = None
        self.state = "off"

    @property
    def _range(self) -> tuple[int, int]:
        # qrange as Python ints, cached: reading a tensor's values on every forward would cost a sync each time
        if getattr(self, "_range_cache", None) is None:
            self._range_cache = tuple(int(v) for v in self.qrange)
        return self._range_cache

    def observe_tensor(self, x: torch.Tensor) -> None:
        """Feed one tensor to the observer directly (how weight quantizers calibrate)."""
        self.set_state("observe")
        self.forward(x)
        self.state = "off"

    # ----- math ----------------------------------------------------------------------------------------------
    def _qparams(self, xv: torch.Tensor, dims: tuple[int, ...]):
        qmin, qmax = self._range
        if self.spec.granularity.dynamic:
            scale, zp = qparams_from_minmax(xv.detach().amin(dims, keepdim=True), xv.detach().amax(dims, keepdim=True),
                                            self.spec.bits, self.spec.symmetric, qmin < 0)
            return scale, zp, qmin, qmax
        return self.scale, self.zero_point, qmin, qmax

    def quantize_int(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of x (same shape) under the frozen qparams: integers in x's float dtype, or float8 for fp8_e4m3."""
        xv, dims = self.spec.granularity.view(x, self.channel_axis)
        if self.spec.scheme == "fp8_e4m3":
            return quantize_fp8(xv, self.scale).reshape(x.shape)
        if self.spec.scheme != "uniform":
            raise VitqError(f"{self.spec.scheme} values have no integer codes")
        scale, zp, qmin, qmax = self._qparams(xv, dims)
        return quantize(xv, scale, zp, qmin, qmax).reshape(x.shape)

    def dequantize_int(self, q: torch.Tensor) -> torch.Tensor:
        """Real values of codes ``q`` (static granularities only)."""
        qv, _ = self.spec.granularity.view(q, self.channel_axis)
        if self.spec.scheme == "fp8_e4m3":
            return (qv.float() * self.scale).reshape(q.shape)
        return dequantize(qv, self.scale, self.zero_point).reshape(q.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.state == "off":
            return x
        if self.state == "observe":
            if self.observer is not None:
                self.observer.update(x)
            return x
        xv, dims = self.spec.granularity.view(x, self.channel_axis)
        scheme = self.spec.scheme
        if scheme != "uniform":
            if scheme == "fp8_e4m3":
                out = fake_quantize_fp8(xv, self.scale)
            elif scheme == "twin_uniform":
                from .algorithms.twin_uniform import fake_quantize_twin

                out = fake_quantize_twin(xv, self.scale, self.spec.bits, signed=self._range[0] < 0)
            else:
                out = fake_quantize_log(xv, self.scale, self.spec.bits, scheme, self.spec.strict)
            return out.reshape(x.shape)
        scale, zp, qmin, qmax = self._qparams(xv, dims)
        return fake_quantize(xv, scale, zp, qmin, qmax).reshape(x.shape)

    # ----- state dict ------------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Frozen buffers have data-dependent shapes: take the stored shape before copying.
        for name in ("scale", "zero_point", "qrange"):
            key = prefix + name
            if key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key])
        self._range_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.frozen and self.enabled:
            self.state = "quantize"

    def extra_repr(self) -> str:
        if not self.enabled:
            return "disabled"
        s = self.spec
        kind = s.scheme if s.scheme != "uniform" else ("sym" if s.symmetric else "asym")
        return (f"{s.bits}b {kind} {s.granularity.kind} {s.observer} "
                f"state={self.state}{' frozen' if self.frozen else ''}")
