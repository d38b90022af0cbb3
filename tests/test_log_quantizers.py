"""Logarithmic (log2, log-sqrt2) quantizers for the softmax output: levels, bit budget, integration, refusals."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vitq
from vitq import QuantRule, QuantSpec, VitqError
from vitq.export import export_onnx
from vitq.primitives import fake_quantize_log
from vitq.quantizer import Quantizer


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 6), scheme=st.sampled_from(["log2", "log_sqrt2"]), seed=st.integers(0, 1000))
def test_levels_and_budget(bits, scheme, seed):
    x = torch.rand(4000, generator=torch.Generator().manual_seed(seed)) ** 4  # softmax-like: many small values
    scale = x.max()
    out = fake_quantize_log(x, scale, bits, scheme)
    levels = out.unique()
    assert levels.numel() <= 2 ** bits  # b bits: at most 2^b levels, the zero level included
    step = 1.0 if scheme == "log2" else 0.5
    nonzero = levels[levels > 0]
    exps = -torch.log2(nonzero / scale) / step
    assert torch.allclose(exps, exps.round(), atol=1e-4)  # every level is scale * 2^(-step * integer)
    assert exps.max() <= 2 ** bits - 2 + 1e-4


def test_rounding_by_hand():
    scale = torch.tensor(1.0)
    x = torch.tensor([1.0, 0.5, 0.3, 0.26, 0.0, 1e-6, 2.0, -0.1])
    # log2, 3 bits: levels 1, 1/2, ..., 1/64 and an exact zero (8 levels)
    out = fake_quantize_log(x, scale, 3, "log2")
    assert out.tolist() == [1.0, 0.5, 0.25, 0.25, 0.0, 0.0, 1.0, 0.0]
    out = fake_quantize_log(torch.tensor([0.7071]), scale, 3, "log_sqrt2")
    assert out.item() == pytest.approx(2 ** -0.5)


def test_log_beats_uniform_on_softmax_values_at_4_bits():
    logits = torch.randn(64, 65, 65) * 3
    p = logits.softmax(-1)
    err = {}
    for scheme in ("uniform", "log2", "log_sqrt2"):
        q = Quantizer(QuantSpec(4, symmetric=True, scheme=scheme))
        q.observe_tensor(p)
        q.solve()
        q.enable()
        rel = ((q(p) - p).abs() / p.clamp_min(1e-3)).mean().item()
        err[scheme] = rel
    assert err["log_sqrt2"] < err["uniform"] and err["log2"] < err["uniform"]


def test_in_a_recipe_and_refusals(tmp_path):
    from vitq.models import build_from_source

    cfg = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
           "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}
    tiny_vit = build_from_source({"kind": "vit_json", "cfg": cfg}).eval()
    base = vitq.preset("w8a8")
    cfg = vitq.QuantConfig(rules=(QuantRule("*.matmul_av.a_quantizer", QuantSpec(4, scheme="log_sqrt2")),)
                           + base.rules)
    assert vitq.QuantConfig.from_dict(cfg.to_dict()).rules == cfg.rules
    x = torch.randn(4, 3, 32, 32)
    qm = vitq.quantize(tiny_vit, cfg, calib=[x], show_progress=False)
    q = qm.blocks[0].attn.matmul_av.a_quantizer
    assert q.has_qparams and q.state == "quantize" and "log_sqrt2" in repr(q)
    with torch.no_grad():
        assert torch.isfinite(qm(x)).all()
    vitq.save(qm, tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(vitq.load(tmp_path / "q")(x), qm(x))
    with pytest.raises(VitqError, match="log_sqrt2 quantization has no standard INT8 kernel"):
        export_onnx(qm, tmp_path / "m.onnx")
    with pytest.raises(VitqError, match="for activations"):
        Quantizer(QuantSpec(4, scheme="log2"), channel_axis=0, is_weight=True)
    with pytest.raises(VitqError, match="unknown scheme"):
        QuantSpec(scheme="log3")
