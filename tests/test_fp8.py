"""FP8 (e4m3) quantization and the low-precision runtime: fake quantization against torch's float8 cast, Fp8Linear
and Fp8PatchConv against the fake-quant layers, the automatic kernel choice, and dtype safety under .to()."""
import pytest
import torch

import vitq
from vitq import VitqError
from vitq.primitives import FP8_DTYPE, fake_quantize_fp8
from vitq.runtime import Fp8Linear, Fp8PatchConv, kernel_support, lower, recommended_preset


def test_fake_quantize_fp8_is_the_float8_round_trip():
    x = torch.randn(1000) * 50
    s = torch.tensor(0.1)
    ref = (x / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
    torch.testing.assert_close(fake_quantize_fp8(x, s), ref, atol=0, rtol=1e-6)
    assert (fake_quantize_fp8(x, s) / s).unique().numel() <= 253  # e4m3 has 253 finite values


@pytest.mark.parametrize("preset", ["fp8", "fp8_tensor"])
def test_lowered_layers_equal_fake_quant_layers(tiny_vit, preset):
    qm = vitq.quantize(tiny_vit, preset, calib=[torch.randn(8, 3, 32, 32)], show_progress=False)
    lm, report = lower(qm)
    assert len(report["fp8"]) == 9 and report["int8"] == []  # patch embed + 2 x (qkv, proj, fc1, fc2)
    assert list(report["kept"]) == ["head"] and "divisible by 16" in report["kept"]["head"]  # 10 classes
    assert isinstance(lm.patch_embed.proj, Fp8PatchConv) and isinstance(lm.blocks[0].mlp.fc1, Fp8Linear)
    with torch.no_grad():
        for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc2", "blocks.1.attn.proj"):
            x = torch.randn(5, 17, qm.get_submodule(name).in_features)
            torch.testing.assert_close(lm.get_submodule(name)(x), qm.get_submodule(name)(x), atol=1e-5, rtol=1e-5)
        img = torch.randn(3, 3, 32, 32)
        torch.testing.assert_close(lm.patch_embed.proj(img), qm.patch_embed.proj(img), atol=1e-5, rtol=1e-5)
        assert (lm(img).argmax(-1) == qm(img).argmax(-1)).all()


def test_fp8_weights_are_stored_as_float8_and_reload_bit_exact(tmp_path):
    from vitq.models import load_model

    model = load_model("vit_tiny_patch16_224", num_classes=10)
    qm = vitq.quantize(model, "fp8", calib=[torch.randn(2, 3, 224, 224)], show_progress=False)
    assert qm.blocks[0].attn.qkv.weight_int.dtype == FP8_DTYPE
    vitq.save(qm, tmp_path / "m")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(vitq.load(tmp_path / "m")(x), qm(x))


def test_bf16_cast_keeps_kernel_buffers_exact(tiny_vit):
    qm = vitq.quantize(tiny_vit, "fp8", calib=[torch.randn(8, 3, 32, 32)], show_progress=False)
    lm, _ = lower(qm)
    fc1 = lm.blocks[0].mlp.fc1
    scale = fc1.weight_scale.clone()
    lm = lm.to(torch.bfloat16)
    assert fc1.weight_fp8.dtype == FP8_DTYPE and fc1.weight_scale.dtype == torch.float32
    assert torch.equal(fc1.weight_scale, scale)
    with torch.no_grad():
        out = lm(torch.randn(2, 3, 32, 32).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_automatic_choice_per_layer_and_device(tiny_vit):
    qm = vitq.quantize(tiny_vit, "w8a8", calib=[torch.randn(8, 3, 32, 32)], show_progress=False)
    _, report = lower(qm)
    assert report["fp8"] == [] and len(report["int8"]) == 9  # uniform 8-bit recipe -> integer kernels
    assert recommended_preset("cpu") == "w8a8" and kernel_support("cpu")["fast"] is False
    with pytest.raises(VitqError, match="frozen"):
        lower(vitq.convert(tiny_vit, "fp8"))
    qm4 = vitq.quantize(tiny_vit, "w4a4", calib=[torch.randn(8, 3, 32, 32)], show_progress=False)
    _, report = lower(qm4)
    assert report["int8"] == [] and all("8-bit" in r for r in report["kept"].values())


def test_patch_conv_refuses_overlapping_convolutions():
    from vitq.nn import QuantConv2d
    from vitq.runtime import fp8_reason

    conv = QuantConv2d.from_float(torch.nn.Conv2d(3, 16, 3, stride=1, padding=1))
    assert "patch-embedding" in fp8_reason(conv)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)),
                    reason="needs a CUDA GPU with FP8 tensor cores (sm 8.9+)")
def test_fp8_linear_on_cuda(tiny_vit):
    qm = vitq.quantize(tiny_vit.cuda(), "fp8", calib=[torch.randn(8, 3, 32, 32, device="cuda")], device="cuda",
                       show_progress=False)
    lm, report = lower(qm, "cuda")
    assert len(report["fp8"]) == 9
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(lm(x).float(), qm(x).float(), atol=0.05, rtol=0.05)


def test_lowp_engine_comparison_runs_on_cpu(tiny_vit):
    from vitq.speed import compare_lowp_engines

    rows = compare_lowp_engines(tiny_vit, "cpu", batch_sizes=[2], reps=1, compile=False, show_progress=False)
    assert [r["engine"] for r in rows] == ["float", "fp8", "int8"]
    assert rows[0]["vs_float"] == 1.0 and all(r["ms"] > 0 for r in rows)


def test_bench_on_cuda_without_a_gpu_is_a_one_line_error(capsys):
    from vitq.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = main(["bench", "--model", "vit_tiny_patch16_224", "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
