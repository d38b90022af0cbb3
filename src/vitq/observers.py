"""Observers: ``update(x)`` accumulates statistics over calibration batches, ``solve()`` computes qparams once.

All statistics are vectorized over the groups of the spec's granularity (a tensor of shape = the granularity view
with reduced dims at size 1): there is no Python loop over channels. Non-finite inputs raise a VitqError naming
the problem; constant and all-zero inputs give a finite, positive scale (see ``primitives.EPS``).

* ``minmax``:     running min and max.
* ``ema``:        exponential moving average of per-batch min and max (``momentum``, default 0.9).
* ``percentile``: per-batch lower/upper percentiles (``percentile``, default 99.99), averaged over batches.
* ``mse``:        grid search of a shrink ratio of the min/max range minimizing the mean ``|x - fq(x)|^p``
                  (``p`` default 2.4, as in BRECQ-style code) on a seeded subsample of the calibration data.
* ``omse``:       the same search with the L2 norm (``p = 2``) on a finer grid: OMSE (Choukroun et al., 2019),
                  minimizing the Frobenius norm of the quantization error, as FQ-ViT calibrates.

Method-specific observers (``pct_search`` of RepQ-ViT, ``ptf`` of FQ-ViT, ``twin`` of PTQ4ViT) live in
:mod:`vitq.algorithms` beside their method; :data:`OBSERVERS` is the one registry of every observer name.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional, Union

import torch

from .errors import VitqError
from .primitives import fake_quantize, qparams_from_minmax
from .schemes import get_scheme

if TYPE_CHECKING:
    from .config import QuantSpec


def _rows(xv: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Size]:
    """(R, M) matrix whose rows are the groups of ``xv`` reduced over ``dims``, and the keepdim stat shape."""
    kept = [d for d in range(xv.ndim) if d not in dims]
    stat_shape = torch.Size(1 if d in dims else xv.shape[d] for d in range(xv.ndim))
    rows = xv.permute(*kept, *dims).reshape(stat_shape.numel(), -1)
    return rows, stat_shape


class Observer:
    """Base class: holds the spec and the owner's channel axis; subclasses accumulate and solve.

    ``solve()`` returns ``(scale, zero_point, qmin, qmax)`` with scale/zero_point in the keepdim stat shape.
    """

    def __init__(self, spec: QuantSpec, channel_axis: int = -1):
        self.spec = spec
        self.channel_axis = channel_axis
        self.min_val: Optional[torch.Tensor] = None
        self.max_val: Optional[torch.Tensor] = None
        self.batches = 0

    @property
    def has_data(self) -> bool:
        return self.batches > 0

    def update(self, x: torch.Tensor) -> None:
        """Accumulate one tensor (any batch size) into the running statistics."""
        x = x.detach().float()
        if x.numel() == 0:
            return
        if not torch.isfinite(x).all():
            bad = "NaN" if torch.isnan(x).any() else "infinite"
            raise VitqError(f"observer received {bad} values: check the model inputs and the layer before it")
        xv, dims = self.spec.granularity.view(x, self.channel_axis)
        rows, shape = _rows(xv, dims)
        if self.min_val is not None and self.min_val.shape != shape:
            raise VitqError(f"observer statistics shape changed from {tuple(self.min_val.shape)} to {tuple(shape)}")
        self._accumulate(rows, shape)
        self.batches += 1

    def _accumulate(self, rows: torch.Tensor, shape: torch.Size) -> None:
        lo, hi = rows.amin(1).view(shape), rows.amax(1).view(shape)
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)

    def signed(self) -> bool:
        """Signedness: the spec's, or (when None) signed iff symmetric and something negative was observed."""
        if self.spec.signed is not None:
            return self.spec.signed
        return bool(self.spec.symmetric and (self.min_val < 0).any())

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Qparams from the accumulated statistics."""
        if not self.has_data:
            raise VitqError("observer has seen no data")
        solve = get_scheme(self.spec.scheme).solve_minmax
        if solve is None:
            raise VitqError(f"{self.spec.scheme} scales come from a searching observer, not min/max "
                            f"(for twin_uniform: observer: twin)")
        return solve(self.min_val, self.max_val, self.spec, self.signed())


class MinMaxObserver(Observer):
    """Running minimum and maximum per group."""


class EMAMinMaxObserver(Observer):
    """Moving average of per-batch min/max: ``m = momentum * m + (1 - momentum) * batch`` (first batch as is)."""

    def __init__(self, spec, channel_axis=-1, momentum: float = 0.9):
        super().__init__(spec, channel_axis)
        self.momentum = float(momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise VitqError(f"ema momentum must be in [0, 1), got {momentum}")

    def _accumulate(self, rows, shape):
        lo, hi = rows.amin(1).view(shape), rows.amax(1).view(shape)
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            m = self.momentum
            self.min_val = m * self.min_val + (1 - m) * lo
            self.max_val = m * self.max_val + (1 - m) * hi


class PercentileObserver(Observer):
    """Mean over batches of the per-batch ``100 - p`` and ``p`` percentiles (clips rare outliers)."""

    def __init__(self, spec, channel_axis=-1, percentile: float = 99.99):
        super().__init__(spec, channel_axis)
        if not 50.0 < percentile <= 100.0:
            raise VitqError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)
        self._lo_sum: Optional[torch.Tensor] = None
        self._hi_sum: Optional[torch.Tensor] = None

    def _accumulate(self, rows, shape):
        m = rows.shape[1]
        k_hi = max(1, min(m, int(round(self.percentile / 100.0 * m))))
        k_lo = max(1, m + 1 - k_hi)
        hi = rows.kthvalue(k_hi, dim=1).values.view(shape)
        lo = rows.kthvalue(k_lo, dim=1).values.view(shape)
        self._lo_sum = lo if self._lo_sum is None else self._lo_sum + lo
        self._hi_sum = hi if self._hi_sum is None else self._hi_sum + hi
        self.min_val = self._lo_sum / (self.batches + 1)
        self.max_val = self._hi_sum / (self.batches + 1)


class MSEObserver(Observer):
    """Shrink the min/max range by the ratio (from a grid) that minimizes mean ``|x - fq(x)|^p`` per group.

    Keeps a seeded subsample of at most ``max_samples`` calibration values (same columns for every group) to
    search on; the grid loop runs over candidate ratios, each evaluated for all groups at once.
    """

    def __init__(self, spec, channel_axis=-1, p: float = 2.4, grid: int = 100, min_ratio: float = 0.2,
                 max_samples: int = 1 << 20, seed: int = 0):
        super().__init__(spec, channel_axis)
        self.p, self.grid, self.min_ratio, self.max_samples = float(p), int(grid), float(min_ratio), int(max_samples)
        if not (self.p > 0 and self.grid >= 1 and 0.0 < self.min_ratio <= 1.0 and self.max_samples >= 1):
            raise VitqError(f"{spec.observer} needs p > 0, grid >= 1, 0 < min_ratio <= 1 and max_samples >= 1 "
                            f"(got p={p}, grid={grid}, min_ratio={min_ratio}, max_samples={max_samples})")
        self._gen = torch.Generator().manual_seed(seed)
        self._samples: Optional[torch.Tensor] = None  # (R, M)

    def _accumulate(self, rows, shape):
        super()._accumulate(rows, shape)
        samples = rows if self._samples is None else torch.cat([self._samples, rows], dim=1)
        cap = max(1, self.max_samples // samples.shape[0])
        if samples.shape[1] > cap:
            keep = torch.randperm(samples.shape[1], generator=self._gen)[:cap].sort().values
            samples = samples[:, keep]
        self._samples = samples.contiguous()

    def solve(self):
        scale, zp, qmin, qmax = super().solve()
        if not get_scheme(self.spec.scheme).affine:  # the search below is over affine integer grids
            return scale, zp, qmin, qmax
        x = self._samples  # (R, M)
        shape = self.min_val.shape
        signed = self.signed()
        best_err = torch.full((x.shape[0],), float("inf"))
        best_scale, best_zp = scale.reshape(-1).clone(), zp.reshape(-1).clone()
        lo, hi = self.min_val.reshape(-1), self.max_val.reshape(-1)
        for ratio in torch.linspace(self.min_ratio, 1.0, self.grid).tolist():
            s, z = qparams_from_minmax(lo * ratio, hi * ratio, self.spec.bits, self.spec.symmetric, signed)
            err = (fake_quantize(x, s[:, None], z[:, None], qmin, qmax) - x).abs().pow(self.p).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, s, best_scale)
            best_zp = torch.where(better, z, best_zp)
        self._samples = None
        return best_scale.view(shape), best_zp.view(shape), qmin, qmax


class OMSEObserver(MSEObserver):
    """OMSE: L2 (Frobenius) error minimization over a fine grid of clipping ratios."""

    def __init__(self, spec, channel_axis=-1, p: float = 2.0, grid: int = 200, min_ratio: float = 0.1, **kwargs):
        super().__init__(spec, channel_axis, p=p, grid=grid, min_ratio=min_ratio, **kwargs)


# The one registry of observer names. The method observers subclass MSEObserver, so they are named by
# "module:Class" and imported on first use (importing them here would be a cycle).
OBSERVERS: dict[str, Union[type, str]] = {
    "minmax": MinMaxObserver, "ema": EMAMinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver,
    "omse": OMSEObserver,
    "pct_search": "vitq.algorithms.percentile_search:PercentileSearchObserver",
    "ptf": "vitq.algorithms.ptf:PowerOfTwoFactorObserver",
    "twin": "vitq.algorithms.twin_uniform:TwinUniformObserver",
}


def observer_class(name: str) -> type:
    """The observer class registered under ``name``."""
    entry = OBSERVERS.get(name)
    if entry is None:
        raise VitqError(f"unknown observer {name!r} (known: {', '.join(OBSERVERS)})")
    if isinstance(entry, str):
        module, cls = entry.split(":")
        entry = getattr(importlib.import_module(module), cls)
    return entry


def make_observer(spec: "QuantSpec", channel_axis: int = -1) -> Observer:
    """The observer named by ``spec.observer``, built with ``spec.observer_args``."""
    cls = observer_class(spec.observer)
    try:
        return cls(spec, channel_axis, **dict(spec.observer_args))
    except (TypeError, ValueError, OverflowError) as e:  # an unknown argument, or a value of the wrong type
        raise VitqError(f"bad observer_args for {spec.observer}: {e}") from e
