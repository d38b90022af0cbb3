"""Mixed precision: budget parsing, the exact allocation, the mixed recipe as a normal recipe, and the CLI."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

import vitq
from vitq.errors import VitqError
from vitq.mixed import Budget, Unit, allocate, costs, parse_budget, parse_candidates, write_recipe

from .conftest import FASHION_MNIST


@pytest.fixture
def tiny_vit():
    """A small random ViT that records how to rebuild it (what save() needs)."""
    from vitq.models import build_from_source

    cfg = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 48, "depth": 2,
           "num_heads": 3, "mlp_ratio": 2.0, "mean": [0.5] * 3, "std": [0.25] * 3}
    return build_from_source({"kind": "vit_json", "cfg": cfg}).eval()


def _calib(n=16):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return [(x[:n // 2], torch.zeros(n // 2, dtype=torch.long)), (x[n // 2:], torch.zeros(n // 2, dtype=torch.long))]


# ----- budget --------------------------------------------------------------------------------------------------
def test_parse_budget_forms():
    assert parse_budget("w=4.5,a=4") == Budget(w=4.5, a=4.0)
    assert parse_budget(" W = 4 , size=3.2MB ") == Budget(w=4.0, size=3.2e6)
    assert parse_budget("size=1KiB").size == 1024
    assert parse_budget("size=500").size == 500
    assert parse_budget("5") == Budget(w=5.0, a=5.0)
    assert parse_budget({"a": 6}) == Budget(a=6.0)


@pytest.mark.parametrize("bad", ["", "w=", "x=4", "w=4,w=5", "size=3XB", "w=-1", "w=abc", "a=nan"])
def test_parse_budget_refuses(bad):
    with pytest.raises(VitqError):
        parse_budget(bad)


def test_parse_candidates():
    assert parse_candidates("8,4,3,4") == (3, 4, 8)
    for bad in ("", "4,x", "1,4", "9"):
        with pytest.raises(VitqError):
            parse_candidates(bad)


# ----- allocation -------------------------------------------------------------------------------------------------
def _synthetic():
    units = [Unit("a", ["a.w"], weight_elems=100, act_elems=50), Unit("b", ["b.w"], weight_elems=300, act_elems=10),
             Unit("c", ["c.w"], weight_elems=40, act_elems=200)]
    kl = {"a": {3: 0.9, 4: 0.4, 8: 0.05}, "b": {3: 0.3, 4: 0.2, 8: 0.01}, "c": {3: 2.0, 4: 0.5, 8: 0.2}}
    return units, kl


def _brute(units, kl, budget, float_bytes=0):
    best, arg = float("inf"), None
    for combo in itertools.product(*[sorted(kl[u.name]) for u in units]):
        a = {u.name: b for u, b in zip(units, combo)}
        c = costs(units, a, float_bytes)
        if (budget.w is None or c["avg_w_bits"] <= budget.w + 1e-12) and \
                (budget.a is None or c["avg_a_bits"] <= budget.a + 1e-12) and \
                (budget.size is None or c["size_bytes"] <= budget.size + 1e-9):
            v = sum(kl[n][b] for n, b in a.items())
            if v < best - 1e-15:
                best, arg = v, a
    return best, arg


@pytest.mark.parametrize("budget", [Budget(w=4.5), Budget(a=4.2), Budget(w=5, a=4), Budget(size=250 + 180),
                                    Budget(w=3.6, a=6.5, size=300), Budget(w=3), Budget(w=8, a=8)])
def test_allocation_is_optimal_against_brute_force(budget):
    units, kl = _synthetic()
    got = allocate(units, kl, budget, float_bytes=100)
    c = costs(units, got, 100)
    assert budget.w is None or c["avg_w_bits"] <= budget.w + 1e-12
    assert budget.a is None or c["avg_a_bits"] <= budget.a + 1e-12
    assert budget.size is None or c["size_bytes"] <= budget.size + 1e-9
    best, _ = _brute(units, kl, budget, 100)
    assert sum(kl[n][b] for n, b in got.items()) == pytest.approx(best, abs=1e-12)


def test_allocation_random_problems_match_brute_force():
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        units = [Unit(f"u{i}", [], int(torch.randint(1, 1000, (1,), generator=g)),
                      int(torch.randint(1, 1000, (1,), generator=g))) for i in range(4)]
        kl = {u.name: dict(zip((3, 4, 6), sorted(torch.rand(3, generator=g).tolist(), reverse=True))) for u in units}
        budget = Budget(w=3 + 3 * float(torch.rand(1, generator=g)), a=3 + 3 * float(torch.rand(1, generator=g)))
        got = allocate(units, kl, budget)
        best, _ = _brute(units, kl, budget)
        assert sum(kl[n][b] for n, b in got.items()) == pytest.approx(best, abs=1e-12), trial


def test_budget_at_the_bounds_gives_uniform():
    units, kl = _synthetic()
    assert set(allocate(units, kl, Budget(w=3, a=3)).values()) == {3}  # exactly the floor: the only feasible point
    assert set(allocate(units, kl, Budget(w=8, a=8)).values()) == {8}
    # candidates (4, 8) with a budget of 4: every unit at 4
    kl48 = {n: {b: v for b, v in d.items() if b != 3} for n, d in kl.items()}
    assert set(allocate(units, kl48, Budget(w=4, a=4)).values()) == {4}


def test_infeasible_budget_is_one_line():
    units, kl = _synthetic()
    with pytest.raises(VitqError) as e:
        allocate(units, kl, Budget(w=2.5))
    msg = str(e.value)
    assert "\n" not in msg and "3.000" in msg and "infeasible" in msg
    with pytest.raises(VitqError, match="bytes"):
        allocate(units, kl, Budget(size=100))


# ----- the search on a tiny ViT -------------------------------------------------------------------------------------
@pytest.fixture
def searched(tiny_vit):
    calib = _calib()
    cfg, rep = vitq.mixed_precision(tiny_vit, "best", calib, "w=4.5,a=4.5", candidates=(3, 4, 8),
                                    show_progress=False)
    return tiny_vit, calib, cfg, rep


def test_search_meets_budget_and_reports(searched):
    model, calib, cfg, rep = searched
    assert rep["avg_w_bits"] <= 4.5 + 1e-9 and rep["avg_a_bits"] <= 4.5 + 1e-9
    assert rep["budget"] == {"w": 4.5, "a": 4.5}
    assert set(rep["assignment"].values()) <= {3, 4, 8}
    assert len(set(rep["assignment"].values())) > 1  # a real mix on this model
    assert rep["predicted_kl"] <= rep["uniform"]["4"]["predicted_kl"] + 1e-12  # uniform 4 is feasible, so no better
    assert rep["measured_kl"] >= 0 and rep["seconds"]["total"] > 0
    assert cfg.name == "best-mixed"
    json.dumps(rep)
    # the chosen bits are what the quantized model has, layer by layer
    qm = vitq.quantize(model, cfg, calib=calib, show_progress=False)
    mods = dict(vitq.quant_modules(qm))
    for unit, bits in rep["assignment"].items():
        own = [q for n, q in mods[unit].own_quantizers()
               if q.enabled and (unit, n) != ("patch_embed.proj", "input_quantizer")]
        assert {q.spec.bits for q in own} == {bits}, unit
    # the image input stays at 8 bits
    assert mods["patch_embed.proj"].input_quantizer.spec.bits == 8


def test_mixed_recipe_round_trips_and_saves_bit_exact(searched, tmp_path):
    model, calib, cfg, rep = searched
    assert vitq.QuantConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = write_recipe(cfg, tmp_path / "mixed.yaml", rep)
    again = vitq.QuantConfig.from_file(path)
    assert again == cfg
    qm = vitq.quantize(model, again, calib=calib, show_progress=False)
    vitq.save(qm, tmp_path / "run")
    loaded = vitq.load(tmp_path / "run")
    assert loaded.vitq_config == cfg
    x = calib[0][0]
    with torch.no_grad():
        assert torch.equal(qm(x), loaded(x))


def test_budget_uniform_candidates(tiny_vit):
    cfg, rep = vitq.mixed_precision(tiny_vit, vitq.preset("w4a4"), _calib(), "w=4,a=4", candidates=(4, 8),
                                    verify=False, show_progress=False)
    assert set(rep["assignment"].values()) == {4}
    assert rep["avg_w_bits"] == 4 and rep["avg_a_bits"] == 4


def test_search_refuses_infeasible_before_measuring(tiny_vit):
    with pytest.raises(VitqError, match="infeasible") as e:
        vitq.mixed_precision(tiny_vit, "w4a4", _calib(), "w=2.5", candidates=(3, 4), show_progress=False)
    assert "\n" not in str(e.value)


def test_analyze_shows_bits(searched):
    from vitq.analysis.mixer import Mixer
    from vitq.analysis.studies import sensitivity

    model, calib, cfg, rep = searched
    qm = vitq.quantize(model, cfg, calib=calib, show_progress=False)
    rows = {r["layer"]: r for r in sensitivity(Mixer(model, qm), calib[0][0], show_progress=False)}
    for unit, bits in rep["assignment"].items():
        assert f"{bits}" in rows[unit]["bits"]
    assert rows["patch_embed.proj"]["bits"] == f"w{rep['assignment']['patch_embed.proj']} a8"


# ----- CLI -------------------------------------------------------------------------------------------------------------
def test_cli_rejects_bad_budget(capsys):
    from vitq.cli import main

    with pytest.raises(SystemExit) as e:
        main(["quantize", "--budget", "w=four"])
    assert e.value.code == 2
    assert "--budget" in capsys.readouterr().err


def test_cli_refuses_mixed_flag_combinations(capsys, tmp_path):
    from vitq.cli import main

    assert main(["quantize", "--bits", "4,8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --budget" in err and "\n" not in err
    assert main(["quantize", "--budget", "w=4", "--w-bits", "4"]) == 2
    assert "drop --w-bits" in capsys.readouterr().err


def test_cli_quantize_with_budget(tmp_path, capsys):
    if not FASHION_MNIST.exists():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST}")
    from vitq.cli import main

    out, recipe = tmp_path / "run", tmp_path / "mixed.yaml"
    rc = main(["quantize", "--preset", "w4a4", "--budget", "w=5,a=5", "--bits", "4,8", "--calib-size", "8",
               "--limit", "16", "--search-images", "8", "--quiet", "--out", str(out), "--write-recipe", str(recipe)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    mp = rep["mixed_precision"]
    assert mp["avg_w_bits"] <= 5 and mp["avg_a_bits"] <= 5 and rep["w_bits"] == mp["avg_w_bits"]
    assert rep["config"]["name"] == "w4a4-mixed"
    cfg = vitq.QuantConfig.from_file(recipe)
    assert cfg.to_dict() == rep["config"]
    assert vitq.load(out).vitq_config == cfg


def test_reusing_sensitivity_gives_the_same_choice(searched):
    model, calib, cfg, rep = searched
    cfg2, rep2 = vitq.mixed_precision(model, "best", calib, "w=4.5,a=4.5", candidates=(3, 4, 8), verify=False,
                                      show_progress=False, sensitivity=rep["sensitivity"])
    assert rep2["assignment"] == rep["assignment"] and cfg2 == cfg


def test_export_refuses_low_bit_layers_by_name(tiny_vit, tmp_path):
    from vitq.export import export_onnx

    calib = _calib()
    cfg, rep = vitq.mixed_precision(tiny_vit, "w4a4", calib, "w=6,a=6", candidates=(4, 8), verify=False,
                                    show_progress=False)
    low = [u for u, b in rep["assignment"].items() if b == 4]
    assert low
    qm = vitq.quantize(tiny_vit, cfg, calib=calib, show_progress=False)
    with pytest.raises(VitqError) as e:
        export_onnx(qm, tmp_path / "m.onnx")
    assert any(u in str(e.value) for u in low)
