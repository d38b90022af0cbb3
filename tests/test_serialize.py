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


# ----- damaged folders: one line (a VitqError), never a traceback or a silently wrong model ------------------------
def _edit_meta(folder, edit):
    """Rewrite ``folder/vitq.json`` after ``edit(meta)`` changed it in place."""
    path = folder / "vitq.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _drop_checksum(folder):
    """Make ``folder`` look like one saved before checksums were recorded."""
    _edit_meta(folder, lambda m: m.pop("sha256"))


def _load_error(folder) -> str:
    with pytest.raises(VitqError) as e:
        vitq.load(folder)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_save_records_checksum_and_load_verifies_it(frozen, tmp_path):
    from vitq.serialize import file_sha256

    q = vitq.save(frozen, tmp_path / "q")
    meta = json.loads((q / "vitq.json").read_text())
    assert meta["sha256"] == file_sha256(q / "model.safetensors")
    assert sorted(p.name for p in q.iterdir()) == ["model.safetensors", "vitq.json"]  # no temporary files left
    data = bytearray((q / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor: still a valid safetensors file, silently different weights
    (q / "model.safetensors").write_bytes(bytes(data))
    assert _load_error(q) == (f"{q / 'model.safetensors'} does not match the checksum in vitq.json: the file was "
                              f"changed or damaged")


def test_folder_without_checksum_still_loads(frozen, tmp_path):
    q = vitq.save(frozen, tmp_path / "q")
    _drop_checksum(q)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(vitq.load(q)(x), frozen(x))


def _garble_header(q):
    data = bytearray((q / "model.safetensors").read_bytes())
    data[8:16] = b"{garbage"
    (q / "model.safetensors").write_bytes(bytes(data))


def _truncate(q):
    data = (q / "model.safetensors").read_bytes()
    (q / "model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage,checksum,match", [
    (_garble_header, False, "model.safetensors is damaged and cannot be read"),
    (_truncate, False, "model.safetensors is damaged and cannot be read"),
    (lambda q: (q / "model.safetensors").write_bytes(b""), False, "model.safetensors is damaged and cannot be read"),
    (_truncate, True, "does not match the checksum"),
    (lambda q: (q / "vitq.json").write_text("[1, 2]"), True, "vitq.json is damaged: it holds a JSON list"),
    (lambda q: (q / "vitq.json").write_text('"vitq"'), True, "vitq.json is damaged: it holds a JSON str"),
    (lambda q: (q / "vitq.json").write_text('{"format": '), True, "vitq.json is not valid JSON"),
    (lambda q: (q / "vitq.json").write_bytes(b"\xff\xfe\x00"), True, "vitq.json is not valid JSON"),
    (lambda q: _edit_meta(q, lambda m: m.pop("config")), True, "vitq.json is damaged: it has no 'config'"),
    (lambda q: _edit_meta(q, lambda m: m.pop("source")), True, "vitq.json is damaged: it has no 'source'"),
    (lambda q: _edit_meta(q, lambda m: m.pop("data_config")), True, "it has no 'data_config'"),
    (lambda q: _edit_meta(q, lambda m: m.update(config="w4a4")), True, "it has a wrong 'config'"),
    (lambda q: _edit_meta(q, lambda m: m.update(source=[1])), True, "it has a wrong 'source'"),
    (lambda q: _edit_meta(q, lambda m: m.update(sha256=123)), True, "'sha256' entry is not a string"),
    (lambda q: _edit_meta(q, lambda m: m["config"].update(rules=7)), True, "vitq.json is damaged: a recipe needs"),
    (lambda q: _edit_meta(q, lambda m: m["source"].pop("cfg")), True, "vitq.json is damaged: cannot rebuild"),
    (lambda q: _edit_meta(q, lambda m: m["source"]["cfg"].update(depth="two")), True, "vitq.json is damaged"),
    (lambda q: _edit_meta(q, lambda m: m["data_config"].pop("input_size")), True, "vitq.json is damaged"),
    (lambda q: _edit_meta(q, lambda m: m["data_config"].update(mean=3)), True, "vitq.json is damaged"),
], ids=["corrupt-header", "truncated", "empty-tensors-file", "truncated-with-checksum", "meta-list", "meta-string",
        "meta-bad-json", "meta-binary", "no-config", "no-source", "no-data-config", "config-not-object",
        "source-not-object", "checksum-not-string", "config-rules-wrong-type", "source-without-cfg",
        "cfg-wrong-type", "data-config-incomplete", "data-config-wrong-type"])
def test_load_refuses_damaged_folder_in_one_line(frozen, tmp_path, damage, checksum, match):
    q = vitq.save(frozen, tmp_path / "q")
    if not checksum:
        _drop_checksum(q)
    damage(q)
    assert match in _load_error(q)


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf")])
def test_load_refuses_invalid_scales(frozen, tmp_path, value):
    from safetensors.torch import save_file

    from vitq.serialize import file_sha256

    q = vitq.save(frozen, tmp_path / "q")
    tensors = load_file(str(q / "model.safetensors"))
    tensors["blocks.1.mlp.fc2.weight_quantizer.scale"][3] = value
    save_file(tensors, str(q / "model.safetensors"))
    _edit_meta(q, lambda m: m.update(sha256=file_sha256(q / "model.safetensors")))  # consistent, but wrong
    msg = _load_error(q)
    assert "tensor blocks.1.mlp.fc2.weight_quantizer.scale holds a non-positive or non-finite scale" in msg


def test_save_on_a_full_disk_leaves_no_partial_file(frozen, tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    def full_disk(tensors, filename, *a, **k):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(VitqError, match="no space left on device while writing") as e:
        vitq.save(frozen, tmp_path / "q")
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
