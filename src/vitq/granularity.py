"""Granularities: which elements of a tensor share one scale and zero point.

Each granularity is a frozen value type with one method, :meth:`view`, that reshapes a tensor so that the groups
sharing qparams are obtained by reducing over a set of dims (keepdim). Observers reduce over those dims; the
quantizer computes on the same view and reshapes back. Because reduced dims become size 1, qparams calibrated on
one batch size broadcast to any other.

``channel_axis`` is the axis a quantizer's owner calls "the channel" (0 for a Linear/Conv weight, -1 for an
activation); granularities whose ``axis`` is None use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

import torch

from .errors import VitqError


def _check_int(name: str, value, allow_none: bool = False, minimum: Optional[int] = None) -> None:
    """Refuse a granularity field that is not an integer (at least ``minimum``), e.g. ``per_group: "abc"``."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        need = "an integer" if minimum is None else f"an integer of at least {minimum}"
        raise VitqError(f"granularity field {name!r} must be {need}, not {value!r}")


def _norm_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise VitqError(f"axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    dynamic: ClassVar[bool] = False
    kind: ClassVar[str] = "per_tensor"

    def view(self, x: torch.Tensor, channel_axis: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        return x, tuple(range(x.ndim))


@dataclass(frozen=True)
class PerChannel:
    """One scale per index of ``axis`` (default: the owner's channel axis), shared over every other dim."""

    axis: Optional[int] = None
    dynamic: ClassVar[bool] = False
    kind: ClassVar[str] = "per_channel"

    def __post_init__(self):
        _check_int("axis", self.axis, allow_none=True)

    def view(self, x, channel_axis):
        a = _norm_axis(channel_axis if self.axis is None else self.axis, x.ndim)
        return x, tuple(d for d in range(x.ndim) if d != a)


@dataclass(frozen=True)
class PerToken:
    """One scale per token (per row of the last dim), computed from each input at run time (dynamic).

    A token's statistics cannot be calibrated ahead of time (every image has different tokens), so this
    granularity has no observer and no stored qparams: the quantizer solves min/max per row on every forward.
    """

    dynamic: ClassVar[bool] = True
    kind: ClassVar[str] = "per_token"

    def view(self, x, channel_axis):
        return x, (x.ndim - 1,)


@dataclass(frozen=True)
class PerBlock:
    """One scale per contiguous block when ``axis`` is cut into ``num_blocks`` equal blocks.

    Used for the fused qkv weight: its Q, K and V row blocks (``PerBlock(3, axis=0)``) never share a scale.
    """

    num_blocks: Optional[int] = None
    axis: Optional[int] = None
    dynamic: ClassVar[bool] = False
    kind: ClassVar[str] = "per_block"

    def __post_init__(self):
        _check_int("num_blocks", self.num_blocks, allow_none=True, minimum=1)
        _check_int("axis", self.axis, allow_none=True)

    def view(self, x, channel_axis):
        if self.num_blocks is None:
            raise VitqError(f"{self.kind} granularity has no block count: it is set when the model is converted")
        a = _norm_axis(channel_axis if self.axis is None else self.axis, x.ndim)
        if x.shape[a] % self.num_blocks:
            raise VitqError(f"axis of size {x.shape[a]} does not split into {self.num_blocks} equal blocks")
        xv = x.unflatten(a, (self.num_blocks, x.shape[a] // self.num_blocks))
        return xv, tuple(d for d in range(xv.ndim) if d != a)


@dataclass(frozen=True)
class PerHead(PerBlock):
    """One scale per attention head: the channel axis cut into ``num_heads`` contiguous blocks.

    ``num_heads`` may be left None in a config; the attention module fills in its own head count at convert time.
    """

    kind: ClassVar[str] = "per_head"

    @property
    def num_heads(self) -> Optional[int]:
        return self.num_blocks


@dataclass(frozen=True)
class PerGroup:
    """One scale per group of ``size`` consecutive elements along ``axis`` (default: last).

    ``channel_axis`` (default 0) additionally keeps one scale set per index of that axis, so on a (out, in) weight
    the default is the usual "per output row, per group of ``size`` inputs". Set it to None for activations
    (groups along channels shared over tokens).
    """

    size: int = 128
    axis: int = -1
    channel_axis: Optional[int] = 0
    dynamic: ClassVar[bool] = False
    kind: ClassVar[str] = "per_group"

    def __post_init__(self):
        _check_int("size", self.size, minimum=1)
        _check_int("axis", self.axis)
        _check_int("channel_axis", self.channel_axis, allow_none=True)

    def view(self, x, channel_axis):
        a = _norm_axis(self.axis, x.ndim)
        if x.shape[a] % self.size:
            raise VitqError(f"axis of size {x.shape[a]} is not a multiple of group size {self.size}")
        keep = {a}
        if self.channel_axis is not None:
            c = _norm_axis(self.channel_axis, x.ndim)
            if c == a:
                raise VitqError("per_group: channel_axis must differ from the grouped axis")
            keep.add(c)
        xv = x.unflatten(a, (x.shape[a] // self.size, self.size))
        # dims after a shift by one; the within-group dim is a + 1 and is always reduced
        kept = {d if d <= a else d + 1 for d in keep}
        return xv, tuple(d for d in range(xv.ndim) if d not in kept)


Granularity = Union[PerTensor, PerChannel, PerToken, PerBlock, PerHead, PerGroup]
_KINDS = {cls.kind: cls for cls in (PerTensor, PerChannel, PerToken, PerBlock, PerHead, PerGroup)}


def granularity_to_dict(g: Granularity) -> dict:
    """JSON form: ``{"kind": ..., <fields>}``."""
    from dataclasses import asdict

    return {"kind": g.kind, **asdict(g)}


def granularity_from_dict(d: Union[dict, str]) -> Granularity:
    """Parse ``{"kind": "per_group", "size": 64}`` or a short string: ``per_tensor``, ``per_channel``,
    ``per_channel:0``, ``per_token``, ``per_head``, ``per_head:3``, ``per_block:3``, ``per_group:64``."""
    if isinstance(d, Granularity.__args__):
        return d
    if not isinstance(d, (str, dict)):
        raise VitqError(f"a granularity is a name such as per_channel or a mapping with 'kind', not {d!r}")
    if isinstance(d, str):
        kind, _, arg = d.partition(":")
        d = {"kind": kind}
        if arg:
            key = {"per_channel": "axis", "per_head": "num_blocks", "per_block": "num_blocks",
                   "per_group": "size"}.get(kind)
            if key is None:
                raise VitqError(f"granularity {kind!r} takes no argument")
            try:
                d[key] = int(arg)
            except ValueError:
                raise VitqError(f"granularity {kind}:{arg} needs an integer after the colon") from None
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _KINDS:
        raise VitqError(f"unknown granularity {kind!r} (known: {', '.join(_KINDS)})")
    try:
        return _KINDS[kind](**d)
    except TypeError as e:
        raise VitqError(f"bad arguments for {kind}: {e}") from e
