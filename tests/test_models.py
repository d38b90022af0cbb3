"""Model loading: JSON config + checkpoint in every format, timm names, and one-line errors."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from vitq import VitqError
from vitq.models import build_vit_from_cfg, check_vit_cfg, load_default_model, load_model

CFG = {"img_size": 16, "patch_size": 8, "in_chans": 1, "num_classes": 4, "embed_dim": 24, "depth": 1,
       "num_heads": 2, "mean": [0.5], "std": [0.5]}


@pytest.fixture
def ckpt(tmp_path):
    model = build_vit_from_cfg(CFG)
    sd = model.state_dict()
    (tmp_path / "m.json").write_text(json.dumps({"cfg": CFG}))
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"))
    torch.save(sd, tmp_path / "m.pth")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "full.pt")
    return tmp_path, model


def test_checkpoint_formats_agree(ckpt):
    path, ref = ckpt
    x = torch.randn(2, 1, 16, 16)
    a = load_model(checkpoint=str(path / "m.safetensors"))  # JSON found beside it
    b = load_model(checkpoint=str(path / "m.pth"), config=str(path / "m.json"))
    c = load_model(checkpoint=str(path / "full.pt"), config=str(path / "m.json"))
    with torch.no_grad():
        torch.testing.assert_close(a(x), ref(x), atol=5e-2, rtol=0)  # fp16 storage
        assert torch.equal(b(x), ref(x)) and torch.equal(c(x), ref(x))
    assert a.vitq_data_config.input_size == (1, 16, 16) and a.vitq_source["kind"] == "vit_json"


def test_shape_mismatch_is_one_line(ckpt):
    path, _ = ckpt
    (path / "other.json").write_text(json.dumps({"cfg": {**CFG, "embed_dim": 48}}))
    with pytest.raises(VitqError, match="does not fit the model: .*shape mismatches") as e:
        load_model(checkpoint=str(path / "m.pth"), config=str(path / "other.json"))
    assert "\n" not in str(e.value)


def test_unreadable_and_missing_files(ckpt, tmp_path):
    path, _ = ckpt
    (path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(VitqError, match="cannot read checkpoint"):
        load_model(checkpoint=str(path / "junk.safetensors"), config=str(path / "m.json"))
    with pytest.raises(VitqError, match="does not exist"):
        load_model(checkpoint=str(path / "none.pth"), config=str(path / "m.json"))
    (path / "lonely.pth").write_bytes((path / "m.pth").read_bytes())
    with pytest.raises(VitqError, match="needs --model NAME or a JSON --config"):
        load_model(checkpoint=str(path / "lonely.pth"))


def test_timm_name_with_checkpoint(tmp_path):
    import timm

    m = timm.create_model("vit_tiny_patch16_224", num_classes=7)
    torch.save(m.state_dict(), tmp_path / "t.pth")
    loaded = load_model("vit_tiny_patch16_224", checkpoint=str(tmp_path / "t.pth"))
    assert loaded.num_classes == 7  # classifier size read from the checkpoint
    assert loaded.vitq_data_config.input_size == (3, 224, 224)
    with pytest.raises(VitqError, match="does not fit"):
        load_model("vit_small_patch16_224", checkpoint=str(tmp_path / "t.pth"))


def test_unknown_timm_name():
    with pytest.raises(VitqError, match="unknown timm model 'vit_nonexistent_9000'"):
        load_model("vit_nonexistent_9000")


def test_pretrained_without_network_is_one_line(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):  # what a machine without network sees, without waiting for its timeouts
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(VitqError, match="could not fetch pretrained weights for 'vit_tiny_patch16_224'") as e:
        load_model("vit_tiny_patch16_224", pretrained=True)
    assert "\n" not in str(e.value)


def test_embedded_default_model():
    m = load_default_model()
    assert m.vitq_source["name"] == "fmnist_vit_tiny"
    assert m.vitq_data_config.input_size == (1, 28, 28)


@pytest.mark.parametrize("change, message", [
    ({"depth": "12"}, "depth must be a positive integer, got '12'"),
    ({"img_size": 16.0}, "img_size must be a positive integer, got 16.0"),
    ({"in_chans": True}, "in_chans must be a positive integer, got True"),
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"embed_dim": -24}, "embed_dim must be a positive integer, got -24"),
    ({"num_heads": 5}, "embed_dim 24 is not divisible by num_heads 5"),
    ({"img_size": 20}, "img_size 20 is not divisible by patch_size 8"),
    ({"mean": [0.5, 0.5, 0.5]}, r"mean must list 1 numbers \(one per input channel, in_chans\), got \[0.5, 0.5"),
    ({"std": 0.5}, "std must list 1 numbers .* got 0.5"),
    ({"mean": ["0.5"]}, r"mean must list 1 numbers .* got \['0.5'\]"),
    ({"std": [float("nan")]}, r"std must list 1 numbers .* got \[nan\]"),
    ({"std": [0]}, r"std values must be positive, got \[0\]"),
    ({"std": [-0.2]}, r"std values must be positive, got \[-0.2\]"),
    ({"mlp_ratio": "4"}, "mlp_ratio must be a positive number, got '4'"),
    ({"qkv_bias": "yes"}, "qkv_bias must be true or false, got 'yes'"),
    ({"depth": None}, "depth must be a positive integer, got None"),
])
def test_bad_config_values_are_one_line_naming_key_and_file(tmp_path, change, message):
    (tmp_path / "m.json").write_text(json.dumps({"cfg": {**CFG, **change}}))
    (tmp_path / "m.pth").write_bytes(b"never read: the config is checked first")
    with pytest.raises(VitqError, match=f"^{re.escape(str(tmp_path / 'm.json'))}: {message}") as e:
        load_model(checkpoint=str(tmp_path / "m.pth"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("document, message", [
    ({"cfg": [16, 8]}, "'cfg' must be a JSON object, got list"),
    ({"cfg": {k: v for k, v in CFG.items() if k != "depth"}}, "lacks depth"),
])
def test_config_must_be_an_object_with_every_key(tmp_path, document, message):
    (tmp_path / "m.json").write_text(json.dumps(document))
    (tmp_path / "m.pth").write_bytes(b"never read: the config is checked first")
    with pytest.raises(VitqError, match=message):
        load_model(checkpoint=str(tmp_path / "m.pth"))
    (tmp_path / "m.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(VitqError, match="is not a vitq/timm model config"):
        load_model(checkpoint=str(tmp_path / "m.pth"))


def test_check_vit_cfg_accepts_optional_keys_and_int_mlp_ratio():
    check_vit_cfg({**CFG, "mlp_ratio": 2, "qkv_bias": False, "pad": 4, "drop_path": 0.1})
    check_vit_cfg({k: v for k, v in CFG.items() if k not in ("mean", "std")})  # 0.5 per channel by default
    model = build_vit_from_cfg({**CFG, "mlp_ratio": 2})
    assert model.blocks[0].mlp.fc1.out_features == 48
