"""QuantAttention: timm's ``Attention`` with the fused qkv output split before quantization (finding 1).

Data flow (B batch, N tokens, C = heads * head_dim)::

    x (B, N, C) -> qkv: QuantLinear -> (B, N, 3C)
        split mode: q, k, v = [..., :C], [..., C:2C], [..., 2C:]  each (B, N, C), each through its own
                    q_quantizer / k_quantizer / v_quantizer *before* the heads are split
        fused mode: one quantizer, qkv.output_quantizer, over the whole (B, N, 3C) output
    heads: (B, H, N, D)
    attn  = matmul_qk(q * scale, k^T)          (B, H, N, N)
    attn  = softmax(attn)
    out   = matmul_av(attn, v)                 matmul_av.a_quantizer is the softmax-output quantizer
    out   -> (B, N, C) -> proj: QuantLinear    proj.input_quantizer is the attention-output quantizer

Q, K and V reach the matmuls already quantized, so matmul_qk's operand quantizers and matmul_av.b_quantizer stay
off in the presets; turn them on (e.g. per-head) to re-quantize the split heads. In split mode, a per-tensor spec on
the qkv weight becomes ``PerBlock(3, axis=0)``: the Q, K and V row blocks never share one scale.

With every internal quantizer off, forward takes timm's own code path (fused SDPA when timm uses it), so the
converted model equals the float one bit for bit.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VitqError
from ..granularity import PerBlock, PerTensor
from ..quantizer import Quantizer
from .base import QuantModule
from .linear import QuantLinear
from .matmul import QuantMatMul


class QuantAttention(QuantModule):
    """Multi-head self-attention with quantizers on Q, K, V, both matmuls and the softmax output."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv: QuantLinear, proj: QuantLinear,
                 attn_drop: nn.Module, proj_drop: nn.Module, fused_attn: bool = False, qkv_mode: str = "split"):
        super().__init__()
        if qkv_mode not in ("split", "fused"):
            raise VitqError(f"qkv_mode must be 'split' or 'fused', not {qkv_mode!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.attn_dim = num_heads * head_dim
        self.scale = head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv_mode = qkv_mode
        self.qkv, self.proj = qkv, proj
        self.attn_drop, self.proj_drop = attn_drop, proj_drop
        self.q_quantizer = Quantizer(channel_axis=-1)
        self.k_quantizer = Quantizer(channel_axis=-1)
        self.v_quantizer = Quantizer(channel_axis=-1)
        self.matmul_qk = QuantMatMul()
        self.matmul_av = QuantMatMul()

    @classmethod
    def from_float(cls, attn: nn.Module, qkv_mode: str = "split") -> "QuantAttention":
        """Build from a timm ``Attention``; options it does not model are refused by name."""
        unsupported = []
        if not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity) or \
                not isinstance(getattr(attn, "k_norm", nn.Identity()), nn.Identity):
            unsupported.append("qk_norm")
        if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            unsupported.append("scale_norm")
        if getattr(attn, "gate", None) is not None:
            unsupported.append("gated")
        if not isinstance(attn.qkv, nn.Linear) or not isinstance(attn.proj, nn.Linear):
            unsupported.append("non-Linear qkv/proj")
        if unsupported:
            raise VitqError(f"QuantAttention does not model timm Attention option(s) {', '.join(unsupported)}; "
                            "exclude these layers or register a quant module for them")
        head_dim = attn.head_dim
        return cls(dim=attn.qkv.in_features, num_heads=attn.num_heads, head_dim=head_dim,
                   qkv=QuantLinear.from_float(attn.qkv), proj=QuantLinear.from_float(attn.proj),
                   attn_drop=attn.attn_drop, proj_drop=attn.proj_drop,
                   fused_attn=bool(getattr(attn, "fused_attn", False)), qkv_mode=qkv_mode)

    def finalize_config(self) -> None:
        """Apply the qkv mode to the specs the rules gave, and bind per-head granularities to this head count."""
        if self.qkv_mode == "fused":
            # One quantizer over the 3C output takes the Q spec; the split quantizers go off.
            self.qkv.output_quantizer.configure(self.q_quantizer.spec)
            for q in (self.q_quantizer, self.k_quantizer, self.v_quantizer):
                q.configure(None)
        else:
            wq = self.qkv.weight_quantizer
            if wq.spec is not None and isinstance(wq.spec.granularity, PerTensor):
                wq.configure(replace(wq.spec, granularity=PerBlock(3, axis=0)))
        for q in self.modules():
            if isinstance(q, Quantizer):
                q.bind(self.num_heads)

    def _float_path(self) -> bool:
        internal = (self.q_quantizer, self.k_quantizer, self.v_quantizer, self.matmul_qk.a_quantizer,
                    self.matmul_qk.b_quantizer, self.matmul_av.a_quantizer, self.matmul_av.b_quantizer)
        return all(q.state == "off" for q in internal)

    def split_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, 3C) qkv output -> Q, K, V, each (B, N, C) and through its own quantizer (finding 1)."""
        C = self.attn_dim
        return (self.q_quantizer(qkv[..., :C]), self.k_quantizer(qkv[..., C:2 * C]),
                self.v_quantizer(qkv[..., 2 * C:]))

    def quantize_qkv(self, qkv_float: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V as this layer quantizes a float qkv output, in either mode: the fused output quantizer (on in
        ``fused`` mode), then the split quantizers (on in ``split`` mode)."""
        return self.split_qkv(self.qkv.output_quantizer(qkv_float))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask

        B, N, _ = x.shape
        C = self.attn_dim
        q, k, v = self.split_qkv(self.qkv(x))  # (B, N, C) each, quantized before the head split
        q, k, v = (t.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, N, D)

        if self.fused_attn and self._float_path():
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = self.matmul_qk(q * self.scale, k.transpose(-2, -1))  # (B, H, N, N), as timm orders it
            attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = self.matmul_av(attn, v)  # (B, H, N, D)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))
