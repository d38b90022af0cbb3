"""Calibration algorithms of vitq.algorithms: the float model unchanged by transforms, each method's defining
property against an independent computation, the presets end to end, and accuracy floors on the shared model."""
from dataclasses import replace

import pytest
import torch

import vitq
from vitq import PerChannel, PerTensor, QuantSpec
from vitq.algorithms import repq, smoothquant
from vitq.observers import observer_class
from vitq.algorithms.fold import norm_linear_pairs
from vitq.algorithms.gptq import gptq_round
from vitq.algorithms.hessian import _search_layer
from vitq.calibrate import calibrate
from vitq.config import Transform
from vitq.primitives import fake_quantize, fake_quantize_log, fake_quantize_twin, qparams_from_minmax
from vitq.recipes import METHODS

from .conftest import CIFAR_DATA, need


def calib_batches(n=2, b=8):
    return [torch.randn(b, 3, 32, 32) for _ in range(n)]


@pytest.mark.parametrize("transform,args", [(repq, {}), (repq, {"round_zero_point": False}),
                                            (smoothquant, {"alpha": 0.5}), (smoothquant, {"alpha": 0.8})])
def test_transforms_leave_the_float_model_unchanged(tiny_vit, transform, args):
    # shift the LayerNorm affines away from identity so the fold has something to move
    for m in tiny_vit.modules():
        if isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.5)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_vit(x)
    qm = vitq.convert(tiny_vit, "repq")
    transform.apply(qm, calib_batches(), **args)
    with torch.no_grad():
        out = qm(x)  # every quantizer still off: the float function of the rewritten weights
    assert not torch.equal(qm.blocks[0].norm1.weight, tiny_vit.blocks[0].norm1.weight)  # weights did change
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)  # float32 rounding level


def test_repq_per_tensor_codes_equal_per_channel_codes(tiny_vit):
    """The reparameterized activation quantized per tensor gives the per-channel codes of the original one."""
    batches = calib_batches()
    qm = vitq.convert(tiny_vit, "repq")  # rounded (integer) shared zero point: the identity is exact
    name, norm, (qkv,) = norm_linear_pairs(qm)[0]
    seen = {}
    h = qkv.register_forward_pre_hook(lambda m, a: seen.setdefault("before", a[0].detach().clone()))
    with torch.no_grad():
        qm(batches[0])
    h.remove()
    obs = observer_class("pct_search")(replace(qkv.input_quantizer.spec, granularity=PerChannel()), -1)
    for b in batches:  # the same per-channel solve repq runs
        with torch.no_grad():
            h = qkv.register_forward_pre_hook(lambda m, a: obs.update(a[0]))
            qm(b)
            h.remove()
    s, z, qmin, qmax = obs.solve()
    codes_before = torch.clamp(torch.round(seen["before"] / s.reshape(-1)) + z.reshape(-1), qmin, qmax)
    repq.apply(qm, batches, round_zero_point=True)
    iq = qkv.input_quantizer
    assert iq.has_qparams and iq.scale.numel() == 1
    seen.clear()
    h = qkv.register_forward_pre_hook(lambda m, a: seen.setdefault("after", a[0].detach().clone()))
    with torch.no_grad():
        qm(batches[0])
    h.remove()
    codes_after = torch.clamp(torch.round(seen["after"] / iq.scale) + iq.zero_point, qmin, qmax)
    assert (codes_after == codes_before).float().mean() > 0.999  # equal up to float32 ties


@pytest.mark.parametrize("bits", [3, 4])
def test_log_levels_strict_and_faithful(bits):
    x = torch.linspace(0, 1, 200001)
    strict = fake_quantize_log(x, torch.tensor(1.0), bits, "log_sqrt2", strict=True).unique().numel()
    loose = fake_quantize_log(x, torch.tensor(1.0), bits, "log_sqrt2", strict=False).unique().numel()
    assert strict == 2 ** bits and loose == 2 ** bits + 1


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [3, 4, 6])
def test_twin_uniform_levels_and_error(bits, signed):
    s1, s2 = 0.01, 0.08
    x = torch.linspace(-0.3 if signed else 0.0, 2.0, 100001)
    y = fake_quantize_twin(x, torch.tensor([s1, s2]), bits, signed)
    assert y.unique().numel() <= 2 ** bits
    top = 2 ** (bits - 1) - 1
    fine = (x >= 0) & (x < (top + 0.5) * s1) if not signed else (x < 0) & (x > -(top + 0.5) * s1)
    assert (y[fine] - x[fine]).abs().max() <= s1 / 2 + 1e-6  # the fine range keeps the fine step


def test_twin_observer_scales_are_a_power_of_two_apart():
    spec = QuantSpec(4, True, scheme="twin_uniform", observer="twin", signed=False)
    obs = observer_class("twin")(spec, -1)
    obs.update(torch.softmax(torch.randn(64, 50) * 3, dim=-1))
    scale, _, qmin, qmax = obs.solve()
    ratio = float(scale[1] / scale[0])
    assert (qmin, qmax) == (0, 7) and ratio >= 1 and abs(ratio - 2 ** round(torch.log2(torch.tensor(ratio)).item())) < 1e-4


def test_ptf_scales_are_base_times_power_of_two():
    spec = QuantSpec(4, False, PerChannel(), observer="ptf")
    obs = observer_class("ptf")(spec, -1)
    x = torch.randn(512, 32) * torch.logspace(-1, 1, 32)  # channels with very different ranges
    obs.update(x)
    scale, zp, qmin, qmax = obs.solve()
    top, z = qparams_from_minmax(x.min(), x.max(), 4, False, False)
    k = torch.log2(scale.reshape(-1) / (top / 8))
    assert torch.allclose(k, k.round(), atol=1e-4) and k.min() >= 0 and k.max() <= 3
    assert k.max() > k.min()  # the narrow channels did get finer scales
    assert torch.all(zp == z)  # one shared zero point


def test_percentile_search_picks_a_candidate_and_beats_minmax():
    spec = QuantSpec(4, False, PerTensor(), observer="pct_search")
    obs = observer_class("pct_search")(spec, -1)
    x = torch.cat([torch.randn(20000), torch.tensor([40.0])])  # one outlier
    obs.update(x)
    s, z, qmin, qmax = obs.solve()
    candidates = [qparams_from_minmax(torch.quantile(x, 1 - p), torch.quantile(x, p), 4, False, False)[0]
                  for p in (0.999, 0.9999, 0.99999)]
    assert any(torch.isclose(s.reshape(()), c, rtol=1e-3) for c in candidates)
    s_mm, z_mm = qparams_from_minmax(x.min(), x.max(), 4, False, False)
    err = lambda s_, z_: (fake_quantize(x, s_, z_, qmin, qmax) - x).pow(2).mean()  # noqa: E731
    assert err(s.reshape(()), z.reshape(())) < err(s_mm, z_mm)


def test_hessian_search_never_worse_than_minmax_on_its_objective(tiny_vit):
    qm = vitq.convert(tiny_vit, replace(vitq.preset("w4a4"), transforms=(Transform("hessian"),)))
    calibrate(qm, calib_batches(), show_progress=False)  # runs the search
    layer = qm.blocks[0].mlp.fc1
    assert layer.weight_quantizer.has_qparams and layer.input_quantizer.has_qparams

    # independent check on synthetic data: the searched objective <= the min-max objective (ratio 1 is a candidate)
    qm2 = vitq.convert(tiny_vit, "w4a4")
    lin = qm2.blocks[0].mlp.fc1
    x, g = torch.randn(256, lin.in_features), torch.randn(256, lin.out_features)
    lin.input_quantizer.observe_tensor(x)
    w = lin.weight.detach().clone()
    a_min, a_max, _ = lin.input_quantizer.observed_minmax()
    s_a, z_a = qparams_from_minmax(a_min.reshape(()), a_max.reshape(()), 4, False, False)
    s_w, z_w = qparams_from_minmax(-w.abs().amax(1), w.abs().amax(1), 4, True, True)

    def objective(xs, xz, ws, wz, wqmin=-8, wqmax=7):
        out = fake_quantize(x, xs, xz, 0, 15) @ fake_quantize(w, ws.reshape(-1, 1), wz.reshape(-1, 1), wqmin,
                                                                 wqmax).t()
        return float((g.pow(2) * (out - x @ w.t()).pow(2)).sum())

    before = objective(s_a, z_a, s_w, z_w)
    _search_layer(lin, x, g, 2, [0.5 + 0.05 * i for i in range(11)], [0.3 + 0.05 * i for i in range(15)])
    after = objective(lin.input_quantizer.scale, lin.input_quantizer.zero_point, lin.weight_quantizer.scale,
                      lin.weight_quantizer.zero_point)
    assert after <= before * (1 + 1e-6)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_rounds_onto_the_grid_and_beats_nearest_rounding(act_order):
    torch.manual_seed(0)
    x = torch.randn(2000, 48) @ torch.randn(48, 48) * 0.3 + torch.randn(48)  # correlated inputs (rows, in)
    w = torch.randn(24, 48)  # (out, in)
    s, z = qparams_from_minmax(w.amin(1), w.amax(1), 4, False, False)
    s, z = s.reshape(-1, 1), z.reshape(-1, 1)
    h = x.double().t() @ x.double()
    q = gptq_round(w, h, s, z, 0, 15, act_order=act_order)
    assert torch.equal(fake_quantize(q, s, z, 0, 15), q)  # every value already on the grid: re-rounding is exact
    assert ((q / s + z).round() - (q / s + z)).abs().max() < 1e-3
    rtn = fake_quantize(w, s, z, 0, 15)
    out_err = lambda wq: float((x @ (wq - w).t()).pow(2).mean())  # noqa: E731
    assert out_err(q) < 0.8 * out_err(rtn)
    # uncorrelated inputs with equal variance: nothing to compensate, GPTQ is nearest rounding
    assert torch.equal(gptq_round(w, torch.eye(48, dtype=torch.float64) * 5, s, z, 0, 15), rtn)


def test_gptq_transform_freezes_its_rounded_weights(tiny_vit):
    cfg = replace(vitq.preset("w4a8"), transforms=(Transform("gptq", (("act_order", True),)),))
    qm = vitq.convert(tiny_vit, cfg)
    calibrate(qm, calib_batches(), show_progress=False)
    fc1 = qm.blocks[0].mlp.fc1
    rounded = fc1.weight.detach().clone()
    assert fc1.weight_quantizer.has_qparams and not torch.equal(rounded, tiny_vit.blocks[0].mlp.fc1.weight)
    vitq.freeze(qm)
    assert torch.allclose(fc1.weight, rounded, atol=1e-6)  # freeze() kept GPTQ's values: no second rounding


RECONSTRUCTING = ("best_recon", "qdrop", "brecq")  # tested with few steps in test_reconstruct.py


@pytest.mark.parametrize("name", [n for n in METHODS if not n.startswith("fp8") and n not in RECONSTRUCTING])
def test_method_presets_quantize_save_and_reload(tiny_vit, tmp_path, name):
    from vitq.models import load_model

    model = load_model("vit_tiny_patch16_224", num_classes=10)  # recorded source, so save/load can rebuild it
    cfg = vitq.preset(name, w_bits=4, a_bits=4)
    assert cfg.name.startswith(name) and vitq.QuantConfig.from_dict(cfg.to_dict()) == cfg
    calib = [torch.randn(4, 3, 224, 224)]
    qm = vitq.quantize(model, cfg, calib=calib, show_progress=False)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = qm(x)
    assert torch.isfinite(out).all()
    vitq.save(qm, tmp_path / name)
    with torch.no_grad():
        assert torch.equal(vitq.load(tmp_path / name)(x), out)  # transformed weights and fixed qparams persist


def test_preset_bits_and_errors():
    assert vitq.preset("repq", w_bits=6, a_bits=6).bits("activation") == 6
    assert vitq.preset("best").bits("weight") == 4
    softmax = "blocks.0.attn.matmul_av.a_quantizer"
    assert vitq.preset("best", w_bits=4, a_bits=4).spec_for(softmax).scheme == "log_sqrt2"
    assert vitq.preset("best", w_bits=3, a_bits=3).spec_for(softmax).scheme == "twin_uniform"
    with pytest.raises(vitq.VitqError, match="8-bit only"):
        vitq.preset("fp8", w_bits=4)
    with pytest.raises(vitq.VitqError, match="unknown transform"):
        Transform("nope")
    with pytest.raises(vitq.VitqError, match="unknown preset"):
        vitq.preset("repqq")


def test_recipe_file_with_transforms(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: mine\ntransforms:\n  - name: smoothquant\n    alpha: 0.7\nrules:\n"
                    "  - {pattern: '*weight_quantizer', spec: {bits: 4, granularity: per_channel}}\n"
                    "  - {pattern: '*input_quantizer', spec: {bits: 8, symmetric: false, observer: pct_search}}\n")
    cfg = vitq.QuantConfig.from_file(path)
    assert cfg.transforms == (Transform("smoothquant", (("alpha", 0.7),)),)


@pytest.fixture(scope="module")
def cifar_subset():
    from vitq.data import make_loader, open_dataset, random_subset
    from vitq.models import data_config_of, load_model

    from .conftest import CIFAR_MODEL

    need(CIFAR_MODEL, "shared CIFAR-10 ViT")
    need(CIFAR_DATA, "shared CIFAR-10 images")
    model = load_model(checkpoint=str(CIFAR_MODEL))
    cfg = data_config_of(model)
    test = open_dataset(CIFAR_DATA, "test", cfg)
    xs, ys = zip(*make_loader(torch.utils.data.Subset(test, range(0, len(test), 20)), batch_size=250))
    calib = [x for x, _ in make_loader(random_subset(open_dataset(CIFAR_DATA, "train", cfg), 32, 0), 32)]
    return model, calib, torch.cat(xs), torch.cat(ys)


def test_repq_recovers_w4a4_accuracy_on_real_data(cifar_subset):
    """500 class-balanced test images: naive min-max W4A4 loses several points, repq stays within 2 of float."""
    model, calib, images, labels = cifar_subset
    with torch.no_grad():
        acc = {}
        for name in ("float", "w4a4", "repq"):
            m = model if name == "float" else vitq.quantize(model, name, calib=calib, show_progress=False)
            acc[name] = (m(images).argmax(-1) == labels).float().mean().item() * 100
    assert acc["float"] - acc["repq"] <= 2.0
    assert acc["repq"] - acc["w4a4"] >= 4.0


def test_per_head_operand_scales(tiny_vit):
    """Q, K, V and the softmax output with one scale per attention head (the head count bound at convert)."""
    base = vitq.preset("w4a4")
    cfg = replace(base, rules=(vitq.QuantRule("*.attn.[qkv]_quantizer", QuantSpec(4, False, vitq.PerHead())),
                               vitq.QuantRule("*.matmul_av.a_quantizer", QuantSpec(4, True, PerChannel(axis=1))))
                  + base.rules)
    qm = vitq.quantize(tiny_vit, cfg, calib=calib_batches(), show_progress=False)
    attn = qm.blocks[0].attn
    assert attn.q_quantizer.scale.numel() == attn.num_heads == 3
    assert attn.matmul_av.a_quantizer.scale.shape == (1, 3, 1, 1)
    # each head's Q block has its own range: the scales differ from the per-tensor one
    qt = vitq.quantize(tiny_vit, base, calib=calib_batches(), show_progress=False).blocks[0].attn.q_quantizer.scale
    assert attn.q_quantizer.scale.max() <= qt.max() + 1e-6 and attn.q_quantizer.scale.min() < qt.max()
