"""Bad inputs to the real ``vitq`` console script: each ends with exit status 2, one error line (argparse: its usage
and one error line) and no traceback, and creates, deletes or changes nothing. Also the safe-writing rules of
:mod:`vitq.output` (what ``--force`` may replace, unwritable paths, a full disk) tested in-process."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitq
from vitq import VitqError
from vitq.cli import main
from vitq.output import atomic_file, check_output, check_replaceable, check_writable, staged_output

from .conftest import FASHION_MNIST, need

VITQ = Path(sys.executable).parent / "vitq"  # the console script pip installed (there is no vitq/__main__.py)
TINY = ["--calib-size", "8", "--limit", "16", "--quiet"]  # a run of the embedded model in a few seconds


def vitq_cli(*argv, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``vitq`` console script in ``cwd``."""
    if not VITQ.exists():
        pytest.skip(f"console script {VITQ} is not installed (pip install -e .)")
    return subprocess.run([str(VITQ), *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under ``root``, hidden ones included: relative path -> (size, mtime_ns), None for
    folders. Equal snapshots before and after a command: it created, deleted and changed nothing there."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def assert_one_line_error(res: subprocess.CompletedProcess, match: str) -> None:
    """Exit status 2 and exactly one non-empty stderr line holding ``match`` (a VitqError)."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and res.stderr.endswith("\n") and lines[0].startswith("vitq "), res.stderr
    assert match in lines[0], res.stderr


def assert_argparse_error(res: subprocess.CompletedProcess, match: str) -> None:
    """Exit status 2, argparse's usage then one error line holding ``match``, no traceback."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("usage: vitq"), res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("vitq ") and ": error: " in last and match in last, res.stderr


@pytest.fixture
def work(tmp_path) -> Path:
    """A current folder holding some of the user's files (which no failing command may touch)."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "img.bin").write_bytes(b"\x00" * 100)
    return tmp_path


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A small frozen w8a8 model saved with vitq.save (no data needed)."""
    from vitq.models import build_from_source

    torch.manual_seed(0)
    cfg = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
           "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}
    model = build_from_source({"kind": "vit_json", "cfg": cfg}).eval()
    qmodel = vitq.quantize(model, "w8a8", calib=[torch.randn(8, 3, 32, 32)], show_progress=False)
    return vitq.save(qmodel, tmp_path_factory.mktemp("saved") / "run")


# ----- flag values: refused by argparse before anything is loaded ------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["quantize", "--batch-size", "0"], "argument --batch-size: must be a positive integer, not '0'"),
    (["eval", "--batch-size", "-4"], "argument --batch-size: must be a positive integer, not '-4'"),
    (["quantize", "--batch-size", "many"], "argument --batch-size: must be an integer, not 'many'"),
    (["quantize", "--workers", "-1"], "argument --workers: must be 0 or a positive integer, not '-1'"),
    (["quantize", "--calib-size", "0"], "argument --calib-size: must be a positive integer"),
    (["quantize", "--limit", "0"], "argument --limit: must be a positive integer"),
    (["analyze", "--probe-images", "0"], "argument --probe-images: must be a positive integer"),
    (["export", "run", "--out", "m.onnx", "--opset", "12"], "argument --opset: must be from 13 to"),
    (["export", "run", "--out", "m.onnx", "--opset", "99"], "argument --opset: must be from 13 to"),
    (["bench", "--batch-sizes", "1", "0"], "argument --batch-sizes: must be a positive integer, not '0'"),
    (["bench", "--reps", "0"], "argument --reps: must be a positive integer"),
], ids=["batch-size-0", "eval-batch-size-negative", "batch-size-not-int", "workers-negative", "calib-size-0",
        "limit-0", "probe-images-0", "opset-too-old", "opset-too-new", "bench-batch-sizes-0", "bench-reps-0"])
def test_bad_flag_values_are_refused_by_argparse(work, argv, match):
    before = snapshot(work)
    assert_argparse_error(vitq_cli(*argv, cwd=work), match)
    assert snapshot(work) == before


# ----- --device: refused in one line before the model is loaded ---------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["quantize", "--device", "tpu0", "--out", "o"], "--device tpu0: not a device (use cpu, cuda or cuda:N)"),
    (["eval", "--device", "tpu0"], "--device tpu0: not a device"),
    (["bench", "--device", "tpu0"], "--device tpu0: not a device"),
    (["bench", "--device", "meta"], "--device meta: vitq runs on cpu or cuda only"),
    pytest.param(["quantize", "--device", "cuda", "--out", "o"], "no CUDA device is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")),
], ids=["quantize-tpu0", "eval-tpu0", "bench-tpu0", "bench-meta", "quantize-cuda-absent"])
def test_bad_device(work, argv, match):
    before = snapshot(work)
    assert_one_line_error(vitq_cli(*argv, cwd=work), match)
    assert snapshot(work) == before


# ----- --out / --force: what may be replaced, what cannot be written ---------------------------------------------
@pytest.mark.parametrize("where,match", [
    (".", "refusing to replace .: it is the current folder"),
    ("..", "refusing to replace ..: it is a folder above the current one"),
    ("HOME", "it is the home folder"),
    ("/", "refusing to replace /: it is the filesystem root"),
], ids=["current-folder", "parent-folder", "home-folder", "root"])
def test_force_never_replaces_current_home_root_or_ancestor(work, where, match):
    """The reported bug: ``vitq quantize --out . --force`` deleted every file in the current folder."""
    cwd = work / "data"
    home = work if where == "HOME" else work / "data" / "img.bin"  # some other HOME: not what the message names
    before = snapshot(work)
    res = vitq_cli("quantize", "--out", home if where == "HOME" else where, "--force", *TINY, cwd=cwd,
                   env={"HOME": str(home)})
    assert_one_line_error(res, match)
    assert snapshot(work) == before


def test_force_refuses_a_folder_of_user_files(work):
    before = snapshot(work)
    assert_one_line_error(vitq_cli("quantize", "--out", "data", "--force", *TINY, cwd=work),
                          "refusing to replace data: it is not a vitq run folder (no vitq.json)")
    assert snapshot(work) == before


@pytest.mark.parametrize("argv,match", [
    (["quantize", "--out", "notes.txt", "--force"], "refusing to replace notes.txt: it is a file"),
    (["quantize", "--out", "notes.txt"], "notes.txt already exists (use --force to replace it)"),
    (["quantize", "--out", "notes.txt/run"], "cannot create"),
    (["analyze", "--out", "notes.txt/a/b"], "notes.txt is a file, not a folder"),
], ids=["force-over-file", "existing-file", "file-as-folder", "analyze-file-as-folder"])
def test_impossible_output_paths(work, argv, match):
    before = snapshot(work)
    assert_one_line_error(vitq_cli(*argv, *TINY, cwd=work), match)
    assert snapshot(work) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions (see the in-process test)")
def test_unwritable_output_parent(work):
    locked = work / "locked"
    locked.mkdir(mode=0o555)
    before = snapshot(work)
    try:
        assert_one_line_error(vitq_cli("quantize", "--out", "locked/run", *TINY, cwd=work),
                              "cannot write to")
    finally:
        locked.chmod(0o755)
    assert snapshot(work) == before


def test_force_replaces_an_earlier_run(work):
    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    old = work / "run"
    old.mkdir()
    (old / "vitq.json").write_text("{}")
    (old / "stale.txt").write_text("from the earlier run")
    res = vitq_cli("quantize", "--out", "run", "--force", *TINY, cwd=work)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in old.iterdir()} == {"model.safetensors", "vitq.json", "report.json", "report.md"}
    assert sorted(p.name for p in work.iterdir()) == ["data", "notes.txt", "run"]  # no hidden leftovers
    assert (work / "notes.txt").read_text() == "mine"


# ----- damaged run folders: one line from eval, info and export ----------------------------------------------------
@pytest.mark.parametrize("argv", [["eval", "{run}", "--data", "/nonexistent"], ["info", "{run}"],
                                  ["export", "{run}", "--out", "out/m.onnx"]], ids=["eval", "info", "export"])
def test_damaged_run_folder(saved_run, tmp_path, argv):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(data))
    before = snapshot(tmp_path)
    res = vitq_cli(*(a.format(run=run) for a in argv), cwd=tmp_path)
    assert_one_line_error(res, "model.safetensors does not match the checksum in vitq.json: the file was changed or "
                               "damaged")
    assert snapshot(tmp_path) == before


def test_export_refusals_leave_no_folders(saved_run, work):
    (work / "m.onnx").write_text("an earlier export")
    before = snapshot(work)
    assert_one_line_error(vitq_cli("export", saved_run, "--out", "m.onnx", cwd=work), "m.onnx already exists")
    assert_one_line_error(vitq_cli("export", saved_run, "--out", "data", "--force", cwd=work),
                          "refusing to replace data: it is a folder")
    assert_one_line_error(vitq_cli("export", work / "nothing", "--out", "new/deeper/m.onnx", cwd=work),
                          "is not a saved vitq model")
    assert snapshot(work) == before


def test_export_creates_missing_folders_only_on_success(saved_run, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "m.onnx"
    assert main(["export", str(saved_run), "--out", str(out)]) == 0, capsys.readouterr().err
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"] and out.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # the temporary file was renamed, not left


@pytest.mark.slow
def test_pretrained_without_network_prints_one_line(tmp_path):
    """Without a network huggingface_hub retries with backoff (about 50 s) and logs ~20 warnings: only vitq's
    one error line may reach stderr."""
    res = vitq_cli("info", "--model", "vit_tiny_patch16_224", "--pretrained", cwd=tmp_path)
    if res.returncode == 0:
        pytest.skip("a network is available here")
    assert_one_line_error(res, "could not fetch pretrained weights for 'vit_tiny_patch16_224'")


# ----- vitq.output in-process: guards, full disk, failed swaps ---------------------------------------------------
def test_check_replaceable_refusals(tmp_path, monkeypatch):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    for path, what in [(".", "the current folder"), (cwd, "the current folder"), ("..", "the home folder"),
                       (tmp_path, "a folder above the current one"), ("/", "the filesystem root")]:
        with pytest.raises(VitqError, match=what):
            check_replaceable(path)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")  # an empty folder may be replaced
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "analysis.json").write_text("{}")
    check_replaceable(tmp_path / "analysis")  # so may an earlier 'vitq analyze' folder


def test_check_writable_refusals_create_nothing(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")
    check_writable(tmp_path / "new" / "deeper" / "run")
    with pytest.raises(VitqError, match="f.txt is a file, not a folder"):
        check_writable(tmp_path / "f.txt" / "run")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(VitqError, match=f"cannot write to {tmp_path}: permission denied"):
        check_output(tmp_path / "new" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing-a-run"])
def test_full_disk_inside_staged_output(tmp_path, monkeypatch, existing):
    out = tmp_path / "runs" / "r"
    if existing:
        out.mkdir(parents=True)
        (out / "vitq.json").write_text('{"old": true}')
    before = snapshot(tmp_path)
    monkeypatch.setattr(Path, "write_text", _full_disk)
    with pytest.raises(VitqError) as e:
        with staged_output(out, force=True) as tmp:
            (tmp / "report.json").write_bytes(b"{")  # a partial file, then the disk is full
            (tmp / "report.md").write_text("# report")
    assert str(e.value) == f"no space left on device while writing {out}"
    assert snapshot(tmp_path) == before  # no partial folder, no 'runs/' created, the earlier run untouched


def test_full_disk_during_a_cli_run_leaves_nothing(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk)
    rc = main(["quantize", "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no space left on device while writing" in err
    assert list(tmp_path.iterdir()) == []


def test_failed_swap_restores_the_earlier_run(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (out / "vitq.json").write_text("{}")
    before = snapshot(tmp_path)
    real_rename, calls = os.rename, []

    def rename(src, dst):  # moving the old run aside works; moving the new one in fails
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(VitqError, match="could not write .*: Input/output error"):
        with staged_output(out, force=True) as tmp:
            (tmp / "vitq.json").write_text('{"new": true}')
    assert snapshot(tmp_path) == before and (out / "vitq.json").read_text() == "{}"
    assert Path(calls[0][1]).name.startswith(".r.old-") and Path(calls[1][0]).name.startswith(".r.partial-")


def test_staged_output_success_replaces_and_cleans_up(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "vitq.json").write_text("old")
    (out / "stale").write_text("x")
    with staged_output(out, force=True) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".r.partial-")
        (tmp / "vitq.json").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["r"] and [p.name for p in out.iterdir()] == ["vitq.json"]
    assert (out / "vitq.json").read_text() == "new"


def test_atomic_file_failure_leaves_nothing(tmp_path):
    out = tmp_path / "x" / "y" / "m.onnx"
    with pytest.raises(VitqError, match="no space left on device while writing"):
        with atomic_file(out) as tmp:
            tmp.write_bytes(b"partial")
            _full_disk()
    with pytest.raises(RuntimeError):
        with atomic_file(out) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole" and [p.name for p in out.parent.iterdir()] == ["m.onnx"]
    with pytest.raises(VitqError, match="already exists"):
        with atomic_file(out):
            pass


# ----- bad data, model configs and recipes, through the console script -----------------------------------------
EMBEDDED = Path(vitq.__file__).parent / "assets" / "fmnist_vit_tiny.safetensors"  # a real checkpoint
GOOD_CFG = {"img_size": 28, "patch_size": 4, "in_chans": 1, "num_classes": 10, "embed_dim": 64, "depth": 4,
            "num_heads": 4, "mean": [0.5], "std": [0.5]}


def image_folder(root: Path, classes: int = 10, per_class: int = 2, size: int = 28) -> Path:
    """``root/{train,test}/cNN/*.png``: small real grayscale images, ``classes`` class folders per split."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"c{c:02d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (size, size), generator=gen, dtype=torch.uint8).numpy()
                Image.fromarray(pixels, mode="L").save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("change,match", [
    ({"depth": "12"}, "depth must be a positive integer"),
    ({"num_heads": 3}, "not divisible by num_heads"),
    ({"img_size": 28.0}, "img_size must be a positive integer"),
    ({"mean": [0.5, 0.5, 0.5]}, "mean"),
    ({"std": [0.0]}, "std"),
])
def test_bad_model_config(work, change, match):
    import json

    (work / "bad.json").write_text(json.dumps({"cfg": {**GOOD_CFG, **change}}))
    before = snapshot(work)
    res = vitq_cli("quantize", "--checkpoint", EMBEDDED, "--config", "bad.json", "--data", "data", *TINY,
                   "--out", "run", cwd=work)
    assert_one_line_error(res, match)
    assert snapshot(work) == before


@pytest.mark.parametrize("bad,match", [
    (lambda d: (d / "test" / "c03" / "x.png").write_bytes(b"not an image at all"), "cannot read image"),
    (lambda d: (d / "test" / "c03" / "empty.jpg").write_bytes(b""), "cannot read image"),
    (lambda d: [(d / s / "c10").mkdir() for s in ("train", "test")], "11 class folders for a 10-class model"),
    (lambda d: [__import__("shutil").rmtree(d / s / "c09") for s in ("train", "test")],
     "9 class folders for a 10-class model: labels would shift"),
])
def test_bad_data_is_refused_before_any_work(work, bad, match):
    data = image_folder(work / "imgs")
    bad(data)
    before = snapshot(work)
    res = vitq_cli("quantize", "--data", data, *TINY, "--out", "run", cwd=work)
    assert_one_line_error(res, match)
    assert snapshot(work) == before


def test_hidden_folder_and_folder_named_like_an_image_are_ignored(work):
    data = image_folder(work / "imgs")
    for split in ("train", "test"):
        (data / split / ".ipynb_checkpoints").mkdir()
        (data / split / "c00" / "folder.png").mkdir()
    res = vitq_cli("eval", "--data", data, "--json", "--quiet", cwd=work)
    assert res.returncode == 0, res.stderr
    import json

    assert json.loads(res.stdout)["images"] == 20  # 10 classes x 2 images; nothing else counted


@pytest.mark.parametrize("recipe,match", [
    ("rules: [{pattern: '*', spec: 8}]", "a spec must be a mapping"),
    ("rules: [{pattern: 5, spec: null}]", "pattern must be a non-empty glob string"),
    ("rules: [{pattern: '*', spec: {granularity: 'per_group:abc'}}]", "needs an integer"),
    ("rules: [{pattern: '*', spec: {bits: 8, symmetric: 'yes'}}]", "must be true or false"),
    ("rules: []\ntransforms: [{name: repq, strength: 2}]", "transform 'repq'"),
    ("rules: []\nexclude: {head: 1}", "lists"),
    ("rules: [{pattern: '*', spec: {observer: ema, observer_args: {momentum: x}}}]", "bad observer_args for ema"),
    ("rules: [{pattern: '*', spec: {observer: mse, observer_args: {grid: -1}}}]", "grid >= 1"),
    ("rules: []\ntransforms: [{name: smoothquant, alpha: x}]", "alpha must be a finite number"),
    ("rules: []\ntransforms: [{name: hessian, rounds: 0}]", "rounds must be an integer in [1, inf]"),
    ("rules: []\ntransforms: [{name: gptq, block_size: 0}]", "block_size must be an integer"),
    ("rules: []\ntransforms: [{name: reconstruct, lr: .nan}]", "lr must be a finite number"),
    ("rules: []\ntransforms: [{name: reconstruct, batch_size: 0}]", "batch_size must be an integer"),
    ("rules: []\ntransforms: [{name: reconstruct, granularity: blocks}]", "granularity must be one of"),
])
def test_bad_recipe(work, recipe, match):
    (work / "r.yaml").write_text(recipe + "\n")
    before = snapshot(work)
    res = vitq_cli("quantize", "--recipe", "r.yaml", *TINY, "--out", "run", cwd=work)
    assert_one_line_error(res, match)
    assert snapshot(work) == before


def test_exclude_written_as_a_string_is_one_glob():
    cfg = vitq.QuantConfig.from_dict({"rules": [], "exclude": "head"})
    assert cfg.exclude == ("head",) and cfg.excludes("head") and not cfg.excludes("h")
    assert vitq.QuantConfig(rules=(), exclude="head").exclude == ("head",)


def test_broken_train_split_is_an_error_not_a_fallback(work):
    data = image_folder(work / "imgs")
    (data / "train" / "c03" / "x.png").write_bytes(b"garbage")
    before = snapshot(work)
    res = vitq_cli("quantize", "--data", data, *TINY, "--out", "run", cwd=work)
    assert_one_line_error(res, "cannot read image")
    assert "train" in res.stderr and snapshot(work) == before


@pytest.mark.parametrize("make,match", [
    (lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(
        __import__("gzip").compress(b"\x00\x00\x08\x03" + b"\x00" * 40)[:-8]), "cannot read"),
    (lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100), "damaged"),
])
def test_damaged_idx_files(work, make, match):
    d = work / "fm"
    d.mkdir()
    (d / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10))
    make(d)
    before = snapshot(work)
    res = vitq_cli("eval", "--data", d, "--quiet", cwd=work)
    assert_one_line_error(res, match)
    assert snapshot(work) == before


@pytest.mark.parametrize("argv,match", [
    (["quantize", "--seed", "99999999999999999999999"], "--seed"),
    (["info", "--config", "m.json"], "give --checkpoint too"),
    (["info", "--num-classes", "5"], "--num-classes sizes the head of a timm model"),
])
def test_flags_that_would_overflow_or_be_ignored(work, argv, match):
    (work / "m.json").write_text("{}")
    before = snapshot(work)
    res = vitq_cli(*argv, cwd=work)
    assert res.returncode == 2 and "Traceback" not in res.stderr and match in res.stderr, res.stderr
    assert snapshot(work) == before


def test_eval_refuses_a_float_model_of_another_architecture(saved_run, work):
    data = image_folder(work / "imgs", size=32)  # fits the saved 32x32 model, not the 28x28 embedded one
    res = vitq_cli("eval", saved_run, "--checkpoint", EMBEDDED, "--data", data, "--limit", "4", "--quiet",
                   cwd=work)
    assert_one_line_error(res, "is not the one the quantized model came from")


def test_calibrate_twice_is_refused(tiny_vit):
    qm = vitq.convert(tiny_vit, "smoothquant")
    vitq.calibrate(qm, [torch.randn(4, 3, 32, 32)], show_progress=False)
    with pytest.raises(VitqError, match="already calibrated"):
        vitq.calibrate(qm, [torch.randn(4, 3, 32, 32)], show_progress=False)
