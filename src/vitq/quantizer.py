"""Quantizer: one tensor's quantization, behind one gate of explicit transitions.

States (read ``quantizer.state``; only the methods below change it):

* ``off``:      identity (the float path). Every quantizer starts here after ``convert``.
* ``observe``:  identity, and the observer accumulates statistics (:meth:`Quantizer.observe`).
* ``quantize``: fake quantization with the fixed scale and zero point (or, for a dynamic granularity such as
  per-token, with qparams solved from the input itself) (:meth:`Quantizer.enable`).
* ``learn``:    fake quantization whose scale is a trainable parameter (``learned_scale``, LSQ gradients), for
  reconstruction (:meth:`Quantizer.learn`, ended by :meth:`Quantizer.end_learning`). Affine static grids only.

Transitions: :meth:`observe` (off -> observe), :meth:`solve` (observer -> qparams, once),
:meth:`set_qparams` (qparams found by an algorithm, once), :meth:`enable` (-> quantize, needs qparams),
:meth:`disable` (-> off). Qparams are fixed at most once (finding 2: never quantize twice); they are stored as
buffers (``scale``, ``zero_point``, ``qrange`` = [qmin, qmax]) so they travel with the state dict. A quantizer whose
``spec`` is None is disabled: it stays ``off`` forever. The grid itself (uniform, log, twin, fp8) comes from the
scheme table :mod:`vitq.schemes`.
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
from .primitives import EPS, fake_quantize_learnable, qparams_from_minmax, qrange
from .schemes import Scheme, get_scheme

class Quantizer(nn.Module):
    """Quantizes one tensor according to a :class:`QuantSpec` (see module docstring for states and transitions)."""

    def __init__(self, spec: Optional[QuantSpec] = None, channel_axis: int = -1, is_weight: bool = False):
        super().__init__()
        self.channel_axis = channel_axis
        self.is_weight = is_weight  # weights are observed and solved by their module, not by calibration passes
        self._state = "off"
        self._observer: Optional[Observer] = None
        self._range_cache: Optional[tuple[int, int]] = None
        self.spec: Optional[QuantSpec] = None
        self.scheme: Optional[Scheme] = None
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))
        self.register_buffer("qrange", torch.empty(0, dtype=torch.int32))  # [qmin, qmax] once solved
        self.configure(spec)

    # ----- configuration -------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``off``, ``observe``, ``quantize`` or ``learn`` (see module docstring)."""
        return self._state

    @property
    def enabled(self) -> bool:
        """True when this quantizer has a spec (is not left in float)."""
        return self.spec is not None

    @property
    def has_qparams(self) -> bool:
        """True once qparams are fixed (by :meth:`solve`, :meth:`set_qparams` or a loaded state dict); a dynamic
        quantizer has them once its qrange is set. Independent of the state: it may still be ``off``."""
        return self.qrange.numel() == 2

    @property
    def has_observations(self) -> bool:
        """True when the observer has accumulated at least one tensor (and qparams are not fixed yet)."""
        return self._observer is not None and self._observer.has_data

    def configure(self, spec: Optional[QuantSpec]) -> None:
        """Set (or clear) the spec; only before qparams are fixed. Refuses grids this tensor cannot take."""
        if self.has_qparams:
            raise VitqError("cannot reconfigure a quantizer whose qparams are fixed")
        scheme = get_scheme(spec.scheme) if spec is not None else None
        if scheme is not None:
            if self.is_weight and not scheme.weights:
                raise VitqError(f"{spec.scheme} quantizers are for activations (e.g. the softmax output), "
                                "not weights")
            if spec.granularity.dynamic and not scheme.dynamic:
                raise VitqError(f"{spec.scheme} quantizers need static (calibrated) scales, not "
                                f"{spec.granularity.kind}")
        self.spec, self.scheme = spec, scheme
        self._observer = None
        self._state = "off"

    def bind(self, num_heads: int) -> None:
        """Fill in the head count of a per-head/per-block granularity left open in the config."""
        g = self.spec.granularity if self.spec else None
        if isinstance(g, PerBlock) and g.num_blocks is None:
            self.spec = replace(self.spec, granularity=type(g)(num_heads, g.axis))

    # ----- transitions ---------------------------------------------------------------------------------------
    def observe(self) -> None:
        """Start accumulating statistics of the tensors that pass (values unchanged). Disabled: no-op."""
        if not self.enabled:
            return
        if self.has_qparams:
            raise VitqError("cannot calibrate a quantizer whose qparams are fixed: calibrate before freeze()")
        if self._observer is None and not self.spec.granularity.dynamic:
            self._observer = make_observer(self.spec, self.channel_axis)
        self._state = "observe"

    def disable(self) -> None:
        """Pass values through unchanged (statistics and qparams are kept)."""
        if self._state == "learn":
            raise VitqError("end_learning() first: the learned scale would be lost")
        self._state = "off"

    def enable(self) -> None:
        """Quantize with the fixed qparams. Disabled: no-op; no qparams yet: error."""
        if not self.enabled:
            return
        if not self.has_qparams:
            raise VitqError("quantizer has no qparams: run calibrate() and freeze() first")
        if self._state == "learn":
            raise VitqError("end_learning() first: the learned scale would be lost")
        self._state = "quantize"

    def learn(self) -> None:
        """Quantize with a trainable copy of the fixed scale (``self.learned_scale``, an nn.Parameter) until
        :meth:`end_learning`. Needs fixed qparams, an affine grid and a static granularity."""
        if not self.enabled or self._state == "learn":
            return
        if not self.has_qparams or not self.scheme.affine or self.spec.granularity.dynamic:
            raise VitqError("only a static affine (uniform) quantizer with fixed qparams can learn its scale")
        self.learned_scale = nn.Parameter(self.scale.detach().clone())
        self._state = "learn"

    def reset_learning(self) -> None:
        """Put the learned scale back to the fixed scale it started from (still learning)."""
        if self._state == "learn":
            with torch.no_grad():
                self.learned_scale.copy_(self.scale)

    def end_learning(self) -> None:
        """Fix the learned scale as the qparams (kept positive) and go back to ``off``."""
        if self._state != "learn":
            return
        self.scale = self.learned_scale.detach().abs().clamp_min(EPS)
        del self.learned_scale
        self._state = "off"

    def solve(self) -> None:
        """Fix qparams from the observer's statistics, once (the state is unchanged). Disabled: no-op."""
        if not self.enabled:
            return
        if self.has_qparams:
            raise VitqError("quantizer qparams are already fixed: quantizing twice is not allowed")
        if self.spec.granularity.dynamic:
            qmin, qmax = qrange(self.spec.bits, self.spec.signed if self.spec.signed is not None
                                else self.spec.symmetric)
            self._store(None, None, qmin, qmax)
            return
        if not self.has_observations:
            raise VitqError("quantizer saw no calibration data")
        self._store(*self._observer.solve())

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> None:
        """Fix qparams found by a calibration algorithm (a search, a reparameterization) instead of the observer.

        Later calibration passes skip this quantizer and freeze only enables it; the state stays as it is, so
        until then passes see float.
        """
        if not self.enabled:
            raise VitqError("cannot set qparams of a disabled quantizer")
        if self.has_qparams:
            raise VitqError("quantizer qparams are already fixed: quantizing twice is not allowed")
        self._store(scale.detach().float().clone(), zero_point.detach().float().clone(), qmin, qmax)

    def _store(self, scale, zero_point, qmin: int, qmax: int) -> None:
        if scale is not None:
            self.scale, self.zero_point = scale, zero_point
        self.qrange = torch.tensor([qmin, qmax], dtype=torch.int32)
        self._observer = None
        self._range_cache = None

    def observed_minmax(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The observer's running (min, max) in the keepdim stat shape and its signedness, for searches that
        start from the observed range (e.g. the Hessian-guided search)."""
        if not self.has_observations:
            raise VitqError("quantizer saw no calibration data")
        obs = self._observer
        return obs.min_val, obs.max_val, obs.signed()

    def observe_tensor(self, x: torch.Tensor) -> None:
        """Feed one tensor to the observer directly (how weight quantizers calibrate); the state is unchanged."""
        state = self._state
        self.observe()
        self.forward(x)
        self._state = state

    @property
    def _range(self) -> tuple[int, int]:
        # qrange as Python ints, cached: reading a tensor's values on every forward would cost a sync each time
        if self._range_cache is None:
            self._range_cache = tuple(int(v) for v in self.qrange)
        return self._range_cache

    # ----- math ----------------------------------------------------------------------------------------------
    def _qparams(self, xv: torch.Tensor, dims: tuple[int, ...]):
        qmin, qmax = self._range
        if self.spec.granularity.dynamic:
            scale, zp = qparams_from_minmax(xv.detach().amin(dims, keepdim=True), xv.detach().amax(dims, keepdim=True),
                                            self.spec.bits, self.spec.symmetric, qmin < 0)
            return scale, zp, qmin, qmax
        return self.scale, self.zero_point, qmin, qmax

    def quantize_int(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of x (same shape) under the fixed qparams: integers in x's float dtype, or float8 values."""
        xv, dims = self.spec.granularity.view(x, self.channel_axis)
        scale, zp, qmin, qmax = self._qparams(xv, dims)
        return self.scheme.quantize_codes(xv, scale, zp, qmin, qmax).reshape(x.shape)

    def dequantize_int(self, q: torch.Tensor) -> torch.Tensor:
        """Real values of codes ``q`` (static granularities only)."""
        qv, _ = self.spec.granularity.view(q, self.channel_axis)
        return self.scheme.dequantize_codes(qv, self.scale, self.zero_point).reshape(q.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._state == "off":
            return x
        if self._state == "observe":
            if self._observer is not None:
                self._observer.update(x)
            return x
        xv, dims = self.spec.granularity.view(x, self.channel_axis)
        if self._state == "learn":
            qmin, qmax = self._range
            return fake_quantize_learnable(xv, self.learned_scale, self.zero_point, qmin, qmax).reshape(x.shape)
        scale, zp, qmin, qmax = self._qparams(xv, dims)
        return self.scheme.fake_quantize(xv, scale, zp, qmin, qmax, self.spec).reshape(x.shape)

    # ----- state dict ------------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Qparam buffers have data-dependent shapes: take the stored shape before copying.
        for name in ("scale", "zero_point", "qrange"):
            key = prefix + name
            if key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key])
        self._range_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.has_qparams and self.enabled:
            self._state = "quantize"

    def extra_repr(self) -> str:
        if not self.enabled:
            return "disabled"
        s = self.spec
        return (f"{s.bits}b {s.scheme} {'sym' if s.symmetric else 'asym'} {s.granularity.kind} {s.observer} "
                f"state={self.state}{' qparams' if self.has_qparams else ''}")
