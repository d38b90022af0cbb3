"""vitq analyze: the mixer's exactness, the studies' invariants, the report files, and the report in a browser."""
import json
import shutil
import subprocess

import pytest
import torch

import vitq
from vitq.analysis.mixer import Mixer
from vitq.analysis.studies import double_quantization, sensitivity
from vitq.cli import main
from vitq.convert import quant_modules

from .conftest import FASHION_MNIST, need


@pytest.fixture(scope="module")
def default_setup():
    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    model = vitq.load_model()
    calib, val, _ = vitq.loaders(model, calib_size=32, limit=64, batch_size=32)
    return model, calib, val


@pytest.fixture(scope="module")
def analysis(default_setup, tmp_path_factory):
    model, calib, val = default_setup
    out = tmp_path_factory.mktemp("an") / "report"
    a = vitq.analyze(model, "w6a6", calib, val, out=out, probe_images=32, show_progress=False)
    return a, out


def test_mixer_all_quantized_equals_quantized_model(tiny_vit):
    x = torch.randn(4, 3, 32, 32)
    qmodel = vitq.quantize(tiny_vit, "w4a4", calib=[x], show_progress=False)
    mixer = Mixer(tiny_vit, qmodel)
    with torch.no_grad():
        torch.testing.assert_close(mixer.model(x), tiny_vit(x), atol=1e-5, rtol=1e-5)  # nothing quantized: float
        with mixer.quantized(mixer.layer_names()) as m:
            assert torch.equal(m(x), qmodel(x))  # everything quantized: the quantized model, exactly
        torch.testing.assert_close(mixer.model(x), tiny_vit(x), atol=1e-5, rtol=1e-5)  # restored


def test_double_quantization_detects_on_grid_weights(tiny_vit):
    x = torch.randn(4, 3, 32, 32)
    qmodel = vitq.quantize(tiny_vit, "w4a8", calib=[x], show_progress=False)
    fresh = double_quantization(tiny_vit, qmodel)
    assert fresh["on_grid_layers"] == []
    # a "float" checkpoint whose weights were already fake-quantized: every layer is flagged
    already = vitq.convert(tiny_vit, "w4a8")
    qm = dict(quant_modules(qmodel))
    for name, m in quant_modules(already):
        if hasattr(m, "weight_quantizer") and qm[name].weight_is_quantized:
            m.weight.data = qm[name].weight.clone()
    stale = double_quantization(already, qmodel)
    assert len(stale["on_grid_layers"]) == len(stale["layers"]) > 0
    assert all(r["loss_db"] >= -1e-6 for r in fresh["layers"])


def test_sensitivity_ranks_and_shares(tiny_vit):
    x = torch.randn(8, 3, 32, 32)
    qmodel = vitq.quantize(tiny_vit, "w3a3", calib=[x], show_progress=False)
    rows = sensitivity(Mixer(tiny_vit, qmodel), x, show_progress=False)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["kl"] >= b["kl"] for a, b in zip(rows, rows[1:]))
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_analysis_sections(analysis):
    a, out = analysis
    depth = 6
    assert len(a["ablation"]) == depth and len(a["blocks"]) == depth
    for q in a["quantizers"].values():
        assert float(q["local"]["sqnr_db"]) > 10.0  # 6-bit quantizers on float inputs
    for layer in a["layers"].values():
        assert layer["ms_float"] > 0 and layer["ms_fakequant"] > 0
    sf = a["findings"]["split_vs_fused"]
    assert set(sf) == {"split", "fused"}
    gap = min(sf["split"]["sqnr_db_mean"][k] - sf["fused"]["sqnr_db_mean"][k] for k in "QKV")
    assert gap > -0.5  # split scales are never coarser than one scale over Q|K|V
    assert a["findings"]["double_quantization"]["on_grid_layers"] == []
    for rec in a["granularity"].values():
        assert rec["recommended"] in ("per_tensor", "per_channel", "per_token")
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["summary"]["eval_images"] == 64
    html = (out / "report.html").read_text()
    for section in ("summary", "findings", "sensitivity", "blocks", "layers", "granularity", "distributions",
                    "quantizers"):
        assert f"id='{section}'" in html
    assert html.count("data:image/png;base64,") >= 8


def test_report_renders_in_chromium(analysis, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    _, out = analysis
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (out / "report.html").resolve().as_uri()
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url], check=True,
                   capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and plots, not a blank page
    assert len(set(img.resize((64, 128)).tobytes())) > 20
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    for heading in ("Summary", "The three findings", "Sensitivity ranking", "Blocks", "Layers", "Distributions"):
        assert heading in dom


def test_cli_analyze(tmp_path, capsys):
    need(FASHION_MNIST, "Fashion-MNIST")
    out = tmp_path / "an"
    rc = main(["analyze", "--limit", "32", "--calib-size", "16", "--probe-images", "16", "--out", str(out),
               "--quiet"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert (out / "report.html").is_file() and (out / "analysis.json").is_file()
    assert "Most sensitive layers" in stdout
    rc = main(["analyze", "--out", str(out)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
