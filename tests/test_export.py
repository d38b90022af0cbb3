"""ONNX QDQ export: exact lowering, a valid graph with int8 weights, onnxruntime parity, refusals."""
import json

import onnx
import pytest
import torch
from onnx import numpy_helper

import vitq
from vitq import VitqError
from vitq.cli import main
from vitq.export import export_onnx, lower_for_export, onnx_logits, onnx_session

from .conftest import CIFAR_DATA, CIFAR_MODEL, need


@pytest.fixture
def calib():
    return [torch.randn(8, 3, 32, 32) for _ in range(2)]


def test_lowering_is_exact(tiny_vit, calib):
    qm = vitq.quantize(tiny_vit, "w8a8", calib=calib, show_progress=False)
    lowered = lower_for_export(qm)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(lowered(x), qm(x))


def test_onnx_graph_and_onnxruntime(tiny_vit, calib, tmp_path):
    qm = vitq.quantize(tiny_vit, "w4a8", calib=calib, show_progress=False)
    summary = export_onnx(qm, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert summary["ops"]["QuantizeLinear"] > 0 and summary["ops"]["DequantizeLinear"] > 0
    int8 = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    big = [w for w in int8 if w.ndim >= 2]
    assert len(big) == summary["weights_as_int8"] == 10  # patch embed + 2 x (qkv, proj, fc1, fc2) + head
    assert all(w.min() >= -8 and w.max() <= 7 for w in big)  # 4-bit codes stored in int8
    assert not [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and
                len(t.dims) == 2 and t.dims[0] * t.dims[1] >= 48 * 48]  # no float weight matrices left
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref = qm(x)
    out = onnx_logits(onnx_session(tmp_path / "m.onnx"), x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("config,match", [("w4a4", "4-bit activations"),
                                          (vitq.preset("w8a8", a_granularity=vitq.PerChannel()), "per_channel")])
def test_undeployable_recipes_refused(tiny_vit, calib, tmp_path, config, match):
    qm = vitq.quantize(tiny_vit, config, calib=calib, show_progress=False)
    with pytest.raises(VitqError, match=match):
        export_onnx(qm, tmp_path / "m.onnx")


def test_unfrozen_refused(tiny_vit, tmp_path):
    with pytest.raises(VitqError, match="frozen"):
        export_onnx(vitq.convert(tiny_vit, "w8a8"), tmp_path / "m.onnx")


def test_cli_export_and_parity_on_shared_model(tmp_path, capsys):
    need(CIFAR_MODEL, "shared CIFAR-10 ViT")
    need(CIFAR_DATA, "shared CIFAR-10 images")
    run = tmp_path / "run"
    assert main(["quantize", "--checkpoint", str(CIFAR_MODEL), "--data", str(CIFAR_DATA), "--calib-size", "64",
                 "--limit", "100", "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert "QuantizeLinear" in capsys.readouterr().out
    assert main(["export", str(run), "--out", str(out)]) == 2  # never overwritten without --force
    assert "already exists" in capsys.readouterr().err
    qm = vitq.load(run)
    _, val, _ = vitq.loaders(qm, CIFAR_DATA, calib_size=1, limit=300, batch_size=100)
    session = onnx_session(out)
    agree = total = 0
    fq_correct = ort_correct = 0
    for x, y in val:
        with torch.no_grad():
            a = qm(x).argmax(-1)
        b = onnx_logits(session, x).argmax(-1)
        agree += int((a == b).sum())
        fq_correct += int((a == y).sum())
        ort_correct += int((b == y).sum())
        total += len(y)
    assert agree / total >= 0.98
    assert abs(fq_correct - ort_correct) / total <= 0.01
    report = json.loads((run / "report.json").read_text())
    assert report["w_bits"] == 8


def test_cli_export_refusal_leaves_nothing(tmp_path, capsys):
    need(CIFAR_MODEL, "shared CIFAR-10 ViT")
    run = tmp_path / "run"
    assert main(["quantize", "--checkpoint", str(CIFAR_MODEL), "--data", str(CIFAR_DATA), "--preset", "w4a4",
                 "--calib-size", "32", "--limit", "50", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    rc = main(["export", str(run), "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "4-bit activations" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cli_bench_on_embedded_model(capsys):
    rc = main(["bench", "--batch-sizes", "2", "--reps", "1", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rows = json.loads(out)
    assert {r["engine"] for r in rows} == {"torch fp32", "torch quantize_dynamic", "ort fp32", "ort int8 (vitq QDQ)"}
    assert all(r["batch"] == 2 and r["ms"] > 0 for r in rows)
    assert next(r for r in rows if r["engine"] == "ort fp32")["vs_ort_fp32"] == 1.0
