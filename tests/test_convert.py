"""convert(): bit-exact float path, rule resolution, recipes from files, lifecycle guards."""
import json

import pytest
import timm
import torch
from torch import nn

import vitq
from vitq import PerChannel, QuantConfig, QuantRule, QuantSpec, VitqError, preset
from vitq.convert import default_registry, named_quantizers
from vitq.nn import QuantAttention, QuantConv2d, QuantLinear


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_small_patch16_224"])
def test_all_quantizers_off_equals_timm_bit_for_bit(name):
    model = timm.create_model(name, pretrained=False).eval()
    qm = vitq.convert(model, "w4a4")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(qm(x), model(x))
    kinds = {type(m) for m in qm.modules()}
    assert {QuantAttention, QuantLinear, QuantConv2d} <= kinds
    assert not any(type(m) is nn.Linear for m in qm.modules())


def test_convert_copies_and_leaves_float_model_alone(tiny_vit):
    before = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    qm = vitq.convert(tiny_vit, "w8a8")
    assert qm is not tiny_vit
    assert not any(isinstance(m, QuantLinear) for m in tiny_vit.modules())
    calib = [torch.randn(4, 3, 32, 32)]
    vitq.calibrate(qm, calib, show_progress=False)
    vitq.freeze(qm)
    for k, v in tiny_vit.state_dict().items():
        assert torch.equal(v, before[k])


def test_convert_twice_refused(tiny_vit):
    qm = vitq.convert(tiny_vit, "w8a8")
    with pytest.raises(VitqError, match="already converted"):
        vitq.convert(qm, "w8a8")


def test_freeze_twice_refused(tiny_vit):
    qm = vitq.quantize(tiny_vit, "w8a8", calib=[torch.randn(2, 3, 32, 32)], show_progress=False)
    with pytest.raises(VitqError, match="already frozen"):
        vitq.freeze(qm)
    with pytest.raises(VitqError, match="frozen"):
        with vitq.calibration(qm):
            pass


def test_freeze_without_calibration_names_the_quantizer(tiny_vit):
    qm = vitq.convert(tiny_vit, "w8a8")
    with pytest.raises(VitqError, match=r"cannot freeze patch_embed\.proj\.input_quantizer: .*no calibration data"):
        vitq.freeze(qm)


def test_first_matching_rule_wins_and_none_means_float(tiny_vit):
    cfg = QuantConfig(rules=(
        QuantRule("head.*", None),
        QuantRule("blocks.0.mlp.fc1.weight_quantizer", QuantSpec(3, granularity=PerChannel()), "weight"),
        *preset("w6a6").rules,
    ))
    qm = vitq.convert(tiny_vit, cfg)
    q = dict(named_quantizers(qm))
    assert not q["head.weight_quantizer"].enabled and not q["head.input_quantizer"].enabled
    assert q["blocks.0.mlp.fc1.weight_quantizer"].spec.bits == 3
    assert q["blocks.1.mlp.fc1.weight_quantizer"].spec.bits == 6
    assert q["patch_embed.proj.input_quantizer"].spec.bits == 8  # the image stays 8-bit


def test_exclude_leaves_module_float(tiny_vit):
    cfg = QuantConfig(rules=preset("w8a8").rules, exclude=("head", "blocks.1.attn"))
    qm = vitq.convert(tiny_vit, cfg)
    assert type(qm.head) is nn.Linear
    assert type(qm.blocks[1].attn) is not QuantAttention
    assert type(qm.blocks[0].attn) is QuantAttention


def test_custom_registry():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(4, 4))
    assert type(vitq.convert(model, "w8a8")[0]) is MyLinear  # exact-type dispatch: unknown subclasses untouched
    reg = default_registry()
    reg.register(MyLinear, lambda m, cfg: QuantLinear.from_float(m))
    assert type(vitq.convert(model, "w8a8", registry=reg)[0]) is QuantLinear


def test_recipe_yaml_and_json_roundtrip(tmp_path):
    cfg = preset("w4a8", qkv="fused")
    d = cfg.to_dict()
    (tmp_path / "r.json").write_text(json.dumps(d))
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    for f in ("r.json", "r.yaml"):
        loaded = QuantConfig.from_file(tmp_path / f)
        assert loaded.rules == cfg.rules and loaded.qkv == "fused"


def test_recipe_hand_written_yaml(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "qkv: split\n"
        "rules:\n"
        "  - {pattern: 'head.*', spec: null}\n"
        "  - pattern: '*weight_quantizer'\n"
        "    spec: {bits: 4, granularity: per_channel, observer: mse}\n"
        "  - pattern: '*'\n"
        "    spec: {bits: 8, symmetric: false, observer: percentile, observer_args: {percentile: 99.9}}\n")
    cfg = QuantConfig.from_file(tmp_path / "mine.yaml")
    assert cfg.name == "mine"
    assert cfg.spec_for("blocks.0.attn.qkv.weight_quantizer") == QuantSpec(4, True, PerChannel(), "mse")
    assert cfg.spec_for("head.weight_quantizer") is None
    assert cfg.spec_for("blocks.0.attn.q_quantizer").observer_args == (("percentile", 99.9),)


@pytest.mark.parametrize("text,match", [("rules: 3", "rules"), ("rules: [{spec: null}]", "pattern"),
                                        ("rules: []\nbogus: 1", "unknown recipe fields"),
                                        ("rules: [{pattern: '*', spec: {bits: 12}}]", "bits must be")])
def test_bad_recipes_raise(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(VitqError, match=match):
        QuantConfig.from_file(tmp_path / "bad.yaml")


def test_presets_and_bit_overrides():
    for name, (w, a) in {"w8a8": (8, 8), "w6a6": (6, 6), "w4a8": (4, 8), "w4a4": (4, 4)}.items():
        cfg = preset(name)
        assert (cfg.bits("weight"), cfg.bits("activation")) == (w, a)
        wspec = cfg.spec_for("blocks.0.mlp.fc1.weight_quantizer")
        aspec = cfg.spec_for("blocks.0.mlp.fc1.input_quantizer")
        assert wspec.symmetric and isinstance(wspec.granularity, PerChannel)
        assert aspec.granularity.kind == "per_tensor"
    cfg = preset("w8a8").with_bits(3, 5)
    assert (cfg.bits("weight"), cfg.bits("activation")) == (3, 5)
    assert cfg.spec_for("patch_embed.proj.input_quantizer").bits == 8
    with pytest.raises(VitqError, match="unknown preset"):
        preset("int8")


def test_set_quantizers_isolates_weight_error(tiny_vit):
    x = torch.randn(4, 3, 32, 32)
    qm = vitq.quantize(tiny_vit, "w4a4", calib=[x], show_progress=False)
    vitq.set_quantizers(qm, False)  # activations float, weights stay on their integer grid
    lin = qm.blocks[0].mlp.fc1
    h = torch.randn(3, lin.in_features)
    assert torch.equal(lin(h), torch.nn.functional.linear(h, lin.weight, lin.bias))
    with torch.no_grad():
        weights_only = qm(x)
    vitq.set_quantizers(qm, True)
    with torch.no_grad():
        both = qm(x)
        ref = tiny_vit(x)
    assert not torch.equal(weights_only, both)
    assert (weights_only - ref).norm() < (both - ref).norm()
