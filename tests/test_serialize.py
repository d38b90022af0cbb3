"""save/load: bit-exact reload, integer weights on disk, refusals."""
import json

import pytest
import torch
from safetensors.torch import load_file

import vitq
from vitq import VitqError


@pytest.fixture
def tiny_vit():
    """A small ViT that records how to rebuild it (what save() needs)."""
    from vitq.models import build_from_source

    cfg = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
           "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}
    return build_from_source({"kind": "vit_json", "cfg": cfg}).eval()


@pytest.fixture
def frozen(tiny_vit):
    calib = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    return vitq.quantize(tiny_vit, "w4a4", calib=calib, show_progress=False)


def test_save_load_bit_exact(frozen, tmp_path):
    vitq.save(frozen, tmp_path / "q")
    loaded = vitq.load(tmp_path / "q")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
    for (n1, t1), (n2, t2) in zip(sorted(frozen.state_dict().items()), sorted(loaded.state_dict().items())):
        assert n1 == n2 and torch.equal(t1, t2)
    assert vitq.is_frozen(loaded)
    with pytest.raises(VitqError, match="already frozen"):
        vitq.freeze(loaded)


def test_weights_stored_as_integers(frozen, tmp_path):
    vitq.save(frozen, tmp_path / "q")
    tensors = load_file(str(tmp_path / "q" / "model.safetensors"))
    w = tensors["blocks.0.attn.qkv.weight_int"]
    assert w.dtype == torch.int8 and w.min() >= -8 and w.max() <= 7
    assert "blocks.0.attn.qkv.weight" not in tensors
    meta = json.loads((tmp_path / "q" / "vitq.json").read_text())
    assert meta["format"] == "vitq-quantized" and meta["config"]["name"] == "w4a4"


def test_save_refuses_overwrite_and_unfrozen(frozen, tiny_vit, tmp_path):
    vitq.save(frozen, tmp_path / "q")
    with pytest.raises(VitqError, match="already holds"):
        vitq.save(frozen, tmp_path / "q")
    vitq.save(frozen, tmp_path / "q", overwrite=True)
    with pytest.raises(VitqError, match="only a frozen model"):
        vitq.save(vitq.convert(tiny_vit, "w8a8"), tmp_path / "u")


def test_load_rejects_bad_folders(frozen, tmp_path):
    with pytest.raises(VitqError, match="not a saved vitq model"):
        vitq.load(tmp_path)
    vitq.save(frozen, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "vitq.json").read_text())
    meta["source"]["cfg"]["embed_dim"] = 96
    (tmp_path / "q" / "vitq.json").write_text(json.dumps(meta))
    with pytest.raises(VitqError, match="do not fit"):
        vitq.load(tmp_path / "q")
    meta["version"] = 99
    (tmp_path / "q" / "vitq.json").write_text(json.dumps(meta))
    with pytest.raises(VitqError, match="version"):
        vitq.load(tmp_path / "q")
