"""The vitq command end to end: the embedded default, the shared CIFAR model, and every bad input."""
import json
import subprocess
import sys

import pytest

from vitq.cli import main

from .conftest import CIFAR_DATA, CIFAR_MODEL, FASHION_MNIST, need

REQUIRED = {"model", "recipe", "w_bits", "a_bits", "calib_images", "eval_images", "fp_top1", "q_top1",
            "seconds_calibrate", "seconds_eval"}


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_quantize_eval_info_on_embedded_default(tmp_path, capsys):
    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "run"
    rc, stdout, err = run(capsys, "quantize", "--limit", "300", "--calib-size", "64", "--out", str(out), "--quiet")
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert REQUIRED <= set(report)
    assert report["eval_images"] == 300 and report["calib_images"] == 64
    assert report["fp_top1"] > 75.0 and abs(report["q_top1"] - report["fp_top1"]) <= 2.0
    assert (out / "report.md").read_text().startswith("# vitq quantization report")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "vitq.json", "report.json", "report.md"}
    # the saved model reloads bit-exact: same accuracy on the same images
    rc, stdout, err = run(capsys, "eval", str(out), "--limit", "300", "--json", "--quiet")
    assert rc == 0, err
    assert json.loads(stdout)["top1"] == pytest.approx(report["q_top1"], abs=1e-9)
    rc, stdout, _ = run(capsys, "info", str(out))
    assert rc == 0 and "blocks.0.attn.v_quantizer" in stdout and "frozen" in stdout


def test_quantize_shared_cifar_model(tmp_path, capsys):
    need(CIFAR_MODEL, "shared CIFAR-10 ViT")
    need(CIFAR_DATA, "shared CIFAR-10 images")
    out = tmp_path / "cifar"
    rc, stdout, err = run(capsys, "quantize", "--checkpoint", str(CIFAR_MODEL), "--data", str(CIFAR_DATA),
                          "--preset", "w8a8", "--calib-size", "64", "--limit", "200", "--batch-size", "100",
                          "--out", str(out), "--quiet")
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["calib_split"] == "train" and report["split"] == "test"
    assert report["coverage"]["qkv_split"] and report["coverage"]["patch_embed_input_bits"] == 8
    assert abs(report["q_top1"] - report["fp_top1"]) <= 2.0


def test_info_on_float_model_with_recipe(capsys):
    rc, stdout, _ = run(capsys, "info", "--model", "vit_tiny_patch16_224", "--preset", "w4a4", "--qkv", "fused")
    assert rc == 0 and "qkv: fused" in stdout and "blocks.0.attn.qkv.output_quantizer" in stdout


@pytest.mark.parametrize("argv,match", [
    (["--model", "vit_does_not_exist", "--data", "."], "unknown timm model"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--w-bits", "9"], "--w-bits: bits must be an integer from 2 to 8"),
    (["--a-bits", "1"], "--a-bits: bits must be"),
    (["--preset", "int3"], "unknown preset"),
    (["--recipe", "/no/recipe.yaml"], "recipe file"),
    (["--checkpoint", "/no/model.safetensors"], "does not exist"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, match):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "quantize", *argv, "--out", str(out), "--quiet")
    assert rc == 2
    assert match in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_incompatible_checkpoint(tmp_path, capsys):
    need(CIFAR_MODEL, "shared CIFAR-10 ViT")
    cfg = json.loads(CIFAR_MODEL.with_suffix(".json").read_text())
    cfg["cfg"]["embed_dim"] = 96
    (tmp_path / "wrong.json").write_text(json.dumps(cfg))
    rc, _, err = run(capsys, "quantize", "--checkpoint", str(CIFAR_MODEL), "--config", str(tmp_path / "wrong.json"),
                     "--data", str(CIFAR_DATA), "--out", str(tmp_path / "o"))
    assert rc == 2 and "does not fit the model" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run(capsys, "quantize", "--out", str(out))
    assert rc == 2 and "already exists (use --force" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_run_leaves_nothing(tmp_path, capsys):
    need(FASHION_MNIST, "Fashion-MNIST")
    out = tmp_path / "out"
    # the data exists but has no 'val' split: fails after the model is loaded
    rc, _, err = run(capsys, "quantize", "--split", "val", "--out", str(out), "--quiet")
    assert rc == 2 and "val" in err
    assert list(tmp_path.iterdir()) == []


def test_console_script_help_and_error():
    help_text = subprocess.run([sys.executable, "-m", "vitq.cli", "quantize", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for flag in ("--model", "--checkpoint", "--data", "--split", "--calib-split", "--calib-data", "--calib-size",
                 "--preset", "--recipe", "--w-bits", "--a-bits", "--seed", "--device", "--batch-size", "--limit",
                 "--out", "--force"):
        assert flag in help_text
    bad = subprocess.run([sys.executable, "-m", "vitq.cli", "eval", "/definitely/not/here"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_eval_float_model_and_calib_data(tmp_path, capsys):
    need(FASHION_MNIST, "Fashion-MNIST")
    rc, stdout, err = run(capsys, "eval", "--limit", "100", "--json", "--quiet")
    assert rc == 0, err
    res = json.loads(stdout)
    assert res["images"] == 100 and 50.0 < res["top1"] <= 100.0 and res["top5"] >= res["top1"]
    # calibrate from another root (same data here, named explicitly) and a named split
    out = tmp_path / "o"
    rc, _, err = run(capsys, "quantize", "--calib-data", str(FASHION_MNIST), "--calib-split", "test",
                     "--calib-size", "16", "--limit", "50", "--out", str(out), "--quiet")
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["calib_split"] == "test" and report["calib_images"] == 16


def test_no_command_prints_help(capsys):
    rc, stdout, _ = run(capsys)
    assert rc == 2 and "quantize" in stdout and "analyze" in stdout and "export" in stdout


def test_method_preset_from_the_cli(tmp_path, capsys):
    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "repq"
    rc, _, err = run(capsys, "quantize", "--preset", "repq", "--w-bits", "6", "--a-bits", "6", "--calib-size", "32",
                     "--limit", "200", "--out", str(out), "--quiet")
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == "repq-w6a6" and (report["w_bits"], report["a_bits"]) == (6, 6)
    assert report["config"]["transforms"] == [{"name": "repq", "round_zero_point": True}]
    assert abs(report["q_top1"] - report["fp_top1"]) <= 3.0
    rc, stdout, _ = run(capsys, "info", "--preset", "auto")  # no GPU here: the uniform 8-bit preset
    assert rc == 0 and "w8a8" in stdout


def test_fp8_preset_refuses_other_bits(capsys):
    rc, _, err = run(capsys, "info", "--preset", "fp8", "--w-bits", "4")
    assert rc == 2 and "8-bit only" in err and len(err.strip().splitlines()) == 1
