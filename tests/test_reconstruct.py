"""Block reconstruction (BRECQ/QDrop with AdaRound): exact codes, schedule, never-worse loss, end to end."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import vitq
from vitq.algorithms import adaround as A
from vitq.algorithms import reconstruct as R
from vitq.calibrate import _observing
from vitq.nn.base import QuantWeightModule


def _images(n=32, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _observed(model, x, preset="w4a4"):
    qm = vitq.convert(model, preset)
    with _observing(qm):
        with torch.no_grad():
            qm(x)
    return qm


def _recipe(**args):
    return replace(vitq.preset("w4a4"), transforms=(vitq.Transform("reconstruct", tuple(args.items())),))


def test_beta_schedule_anneals_20_to_2():
    iters = 100
    betas = [A.beta_schedule(i, iters) for i in range(iters)]
    assert all(b is None for b in betas[:20])  # 20% warm-up: no regularizer
    assert betas[20] == pytest.approx(20.0) and betas[-1] == pytest.approx(2.0)
    tail = betas[20:]
    assert all(a > b for a, b in zip(tail, tail[1:]))  # strictly decreasing


def test_rectified_sigmoid_init_matches_fraction(tiny_vit):
    qm = _observed(tiny_vit, _images())
    layer = qm.blocks[0].mlp.fc1
    q = layer.weight_quantizer
    q.observe_tensor(layer.weight.detach())
    q.solve()
    r = A.SoftRound(layer, learn=True)
    w = layer.weight.detach()
    # soft weight at init is the float weight (inside the clipping range), nearest mode is freeze's rounding
    inside = (r.codes("soft") > q.qrange[0]) & (r.codes("soft") < q.qrange[1])
    assert torch.allclose(r.weight("soft")[inside.reshape(w.shape)], w[inside.reshape(w.shape)], atol=1e-5)
    assert torch.equal(r.weight("nearest"), q.scheme.fake_quantize(w, q.scale, q.zero_point, *q._range, q.spec))


def test_frozen_codes_equal_hard_rounding(tiny_vit):
    x = _images()
    qm = _observed(tiny_vit, x)
    originals = {n: m.weight.detach().clone() for n, m in qm.named_modules() if isinstance(m, QuantWeightModule)}
    stats = R.apply(qm, [x[:16], x[16:]], iters=40, batch_size=8)
    assert [s["name"] for s in stats] == ["patch_embed", "blocks.0", "blocks.1", "norm+head"]
    for q in (m for m in qm.modules() if isinstance(m, vitq.quantizer.Quantizer) and m.enabled):
        assert q.state == "off" and q.has_qparams
    learned = {n: m.weight.detach().clone() for n, m in qm.named_modules() if isinstance(m, QuantWeightModule)}
    hard_codes = {}
    for n, m in qm.named_modules():
        if isinstance(m, QuantWeightModule):
            q = m.weight_quantizer
            s, z = q.scale, q.zero_point
            codes = torch.round(learned[n] * (1.0 / s)) + z
            assert torch.equal(codes, codes.clamp(*q._range))  # on the grid, inside the range
            base = torch.floor(originals[n] * (1.0 / s)) + z
            inside = (codes > q._range[0]) & (codes < q._range[1])
            up = (codes - base)[inside]
            assert set(up.unique().tolist()) <= {0.0, 1.0}  # every rounding decision is down or up
            hard_codes[n] = codes
    vitq.freeze(qm)
    for n, m in qm.named_modules():
        if isinstance(m, QuantWeightModule):
            q = m.weight_quantizer
            assert torch.equal(m.weight_int.float(), hard_codes[n])
            assert torch.equal(m.weight, learned[n])  # the stored weight is the learned one, bit for bit
            assert torch.equal(m.weight, vitq.primitives.dequantize(m.weight_int.float(), q.scale, q.zero_point))


def test_loss_never_worse_and_falls(tiny_vit):
    x = _images()
    qm = _observed(tiny_vit, x)
    stats = R.apply(qm, [x], iters=60, drop_prob=0.0, batch_size=32)
    for s in stats:
        assert s["loss_end"] <= s["loss_start"], s["name"]
    block = next(s for s in stats if s["name"] == "blocks.0")
    assert not block["reverted"] and block["loss_end"] < block["loss_start"]
    h = block["history"]  # full-batch training loss (no drop): falls over the iterations
    assert len(h) == 60 and sum(h[-5:]) < sum(h[:5])


def test_layer_granularity_and_fisher(tiny_vit):
    x = _images(16)
    qm = _observed(tiny_vit, x)
    stats = R.apply(qm, [x], iters=5, granularity="layer", loss="fisher", batch_size=8)
    assert len(stats) == sum(isinstance(m, QuantWeightModule) for m in qm.modules())
    assert all(s["loss_end"] <= s["loss_start"] for s in stats)
    vitq.freeze(qm)
    with torch.no_grad():
        assert torch.isfinite(qm(x)).all()


def test_bad_arguments(tiny_vit):
    x = _images(8)
    with pytest.raises(vitq.VitqError):
        R.apply(_observed(tiny_vit, x), [x], iters=1, granularity="tensor")
    with pytest.raises(vitq.VitqError):
        vitq.quantize(tiny_vit, _recipe(iterations=3), calib=[x], show_progress=False)


def test_quantize_end_to_end_save_load(tmp_path):
    from vitq.models import build_from_source

    cfg = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
           "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}
    model = build_from_source({"kind": "vit_json", "cfg": cfg}).eval()  # records how to rebuild it (save needs it)
    x = _images()
    qm = vitq.quantize(model, _recipe(iters=50), calib=[x[:16], x[16:]], show_progress=False)
    vitq.save(qm, tmp_path / "q")
    back = vitq.load(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(qm(x), back(x))


def test_deterministic_under_seed(tiny_vit):
    x = _images()
    recipe = _recipe(iters=20, seed=3)
    a = vitq.quantize(tiny_vit, recipe, calib=[x], show_progress=False)
    b = vitq.quantize(tiny_vit, recipe, calib=[x], show_progress=False)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name,drop", [("best_recon", 0.5), ("qdrop", 0.5), ("brecq", 0.0)])
def test_reconstruction_presets(tmp_path, name, drop):
    from vitq.models import build_from_source

    cfg = vitq.preset(name, w_bits=3, a_bits=3)
    recon = [t for t in cfg.transforms if t.name == "reconstruct"]
    assert cfg.transforms[-1].name == "reconstruct" and len(recon) == 1
    assert dict(recon[0].args).get("drop_prob", 0.5) == drop
    assert vitq.QuantConfig.from_dict(cfg.to_dict()) == cfg
    few = replace(cfg, transforms=cfg.transforms[:-1] + (
        vitq.Transform("reconstruct", tuple(sorted({**dict(recon[0].args), "iters": 4}.items()))),))
    model = build_from_source({"kind": "vit_json", "cfg": {
        "img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
        "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}})
    qm = vitq.quantize(model, few, calib=[_images(16)], show_progress=False)
    assert qm.vitq_calibration["seconds"]["reconstruct"] > 0
    x = _images(4, seed=7)
    vitq.save(qm, tmp_path / name)
    with torch.no_grad():
        assert torch.equal(vitq.load(tmp_path / name)(x), qm(x))


def test_reconstructed_w8a8_exports_and_matches_onnxruntime(tiny_vit, tmp_path):
    from vitq.export import export_onnx, onnx_logits, onnx_session

    x = _images()
    qm = vitq.quantize(tiny_vit, replace(vitq.preset("w8a8"), transforms=(
        vitq.Transform("reconstruct", (("iters", 10),)),)), calib=[x], show_progress=False)
    export_onnx(qm, tmp_path / "m.onnx")
    with torch.no_grad():
        ref = qm(x)
    out = onnx_logits(onnx_session(tmp_path / "m.onnx"), x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
