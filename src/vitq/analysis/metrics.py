"""Streaming error statistics between a reference tensor and its quantized counterpart: SQNR, MSE, cosine.

Sums are accumulated in float64 over batches, so statistics over many images need no stored tensors.
"""
from __future__ import annotations

import math

import torch


class ErrorStats:
    """Accumulates sum(ref^2), sum(q^2), sum(ref*q), sum((ref-q)^2) and the element count."""

    def __init__(self):
        self.ref2 = self.q2 = self.dot = self.err2 = 0.0
        self.n = 0

    def update(self, ref: torch.Tensor, q: torch.Tensor) -> None:
        ref, q = ref.detach().double().reshape(-1), q.detach().double().reshape(-1)
        self.ref2 += float(ref @ ref)
        self.q2 += float(q @ q)
        self.dot += float(ref @ q)
        self.err2 += float((ref - q) @ (ref - q))
        self.n += ref.numel()

    @property
    def sqnr_db(self) -> float:
        if self.err2 == 0:
            return float("inf")
        if self.ref2 == 0:
            return float("-inf")
        return 10 * math.log10(self.ref2 / self.err2)

    @property
    def mse(self) -> float:
        return self.err2 / max(self.n, 1)

    @property
    def cosine(self) -> float:
        denom = math.sqrt(self.ref2 * self.q2)
        return self.dot / denom if denom > 0 else 1.0

    def to_dict(self) -> dict:
        return {"sqnr_db": _finite(self.sqnr_db), "mse": self.mse, "cosine": self.cosine}


def _finite(v: float):
    """JSON-safe: infinities as strings."""
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
