"""Quantizer: one gate of explicit transitions, qparams fixed once, and qparams in the state dict."""
import pytest
import torch

from vitq import PerChannel, PerToken, QuantSpec, VitqError
from vitq.quantizer import Quantizer


def test_transitions():
    q = Quantizer(QuantSpec(4, symmetric=False))
    x = torch.randn(3, 5)
    assert q.state == "off" and q(x) is x  # off: identity
    q.observe()
    assert q.state == "observe" and q(x) is x  # observing does not change values
    with pytest.raises(VitqError, match="no qparams"):
        q.enable()
    assert q.has_observations and not q.has_qparams
    q.solve()
    assert q.has_qparams and q.state == "observe" and not q.has_observations  # solving changes no state
    q.disable()
    assert q.state == "off" and q(x) is x
    q.enable()
    assert q.state == "quantize"
    assert not torch.equal(q(x), x)
    assert q(x).unique().numel() <= 16


def test_state_is_read_only():
    q = Quantizer(QuantSpec(8))
    with pytest.raises(AttributeError):
        q.state = "quantize"


def test_qparams_fixed_once():
    q = Quantizer(QuantSpec(8))
    q.observe_tensor(torch.randn(10))
    q.solve()
    with pytest.raises(VitqError, match="already fixed"):
        q.solve()
    with pytest.raises(VitqError, match="already fixed"):
        q.set_qparams(torch.tensor(1.0), torch.tensor(0.0), -128, 127)
    with pytest.raises(VitqError, match="fixed"):
        q.observe()
    with pytest.raises(VitqError, match="fixed"):
        q.configure(QuantSpec(4))


def test_set_qparams_keeps_state_off_until_enabled():
    q = Quantizer(QuantSpec(4))
    q.set_qparams(torch.tensor(0.5), torch.tensor(0.0), -8, 7)
    x = torch.tensor([0.3, 1.0, -10.0])
    assert q.state == "off" and q(x) is x
    q.enable()
    assert torch.equal(q(x), torch.tensor([0.5, 1.0, -4.0]))


def test_solve_without_data_refused():
    q = Quantizer(QuantSpec(8))
    with pytest.raises(VitqError, match="no calibration data"):
        q.solve()
    with pytest.raises(VitqError, match="no calibration data"):
        q.observed_minmax()


def test_observed_minmax_reads_the_running_range():
    q = Quantizer(QuantSpec(8, symmetric=False))
    q.observe_tensor(torch.tensor([-1.0, 2.0]))
    q.observe_tensor(torch.tensor([3.0]))
    lo, hi, signed = q.observed_minmax()
    assert float(lo) == -1.0 and float(hi) == 3.0 and signed is False


def test_disabled_quantizer_stays_off():
    q = Quantizer(None)
    q.observe()
    q.solve()
    q.enable()
    x = torch.randn(4)
    assert q(x) is x and not q.has_qparams and q.state == "off"


def test_dynamic_quantizer_needs_only_a_code_range():
    q = Quantizer(QuantSpec(4, symmetric=False, granularity=PerToken()))
    q.solve()
    q.enable()
    assert q.scale.numel() == 0 and q.qrange.tolist() == [0, 15]


@pytest.mark.parametrize("scheme", ["log2", "log_sqrt2", "twin_uniform", "fp8_e4m3"])
def test_static_only_schemes_refuse_dynamic_granularity(scheme):
    with pytest.raises(VitqError, match="static"):
        Quantizer(QuantSpec(8, scheme=scheme, granularity=PerToken()))


def test_qparams_travel_with_state_dict():
    q = Quantizer(QuantSpec(6, granularity=PerChannel()))
    x = torch.randn(7, 9)
    q.observe_tensor(x)
    q.solve()
    q.enable()
    fresh = Quantizer(QuantSpec(6, granularity=PerChannel()))
    fresh.load_state_dict(q.state_dict())
    assert fresh.has_qparams and fresh.state == "quantize"
    assert torch.equal(fresh(x), q(x))
    assert set(q.state_dict()) == {"scale", "zero_point", "qrange"}


def test_quantize_int_dequantize_int_roundtrip():
    q = Quantizer(QuantSpec(4, granularity=PerChannel()), channel_axis=0)
    w = torch.randn(6, 10)
    q.observe_tensor(w)
    q.solve()
    q.enable()
    codes = q.quantize_int(w)
    assert torch.equal(q.quantize_int(q.dequantize_int(codes)), codes)
    assert torch.equal(q.dequantize_int(codes), q(w))


def test_learn_state_trains_the_scale_and_fixes_it_once():
    q = Quantizer(QuantSpec(4, symmetric=False))
    x = torch.randn(64, 8)
    q.observe_tensor(x)
    q.solve()
    q.enable()
    expected = q(x)
    q.disable()
    s0 = q.scale.clone()
    q.learn()
    assert q.state == "learn" and isinstance(q.learned_scale, torch.nn.Parameter)
    y = q(x)
    assert torch.allclose(y, expected, atol=1e-6)  # same grid as the fixed quantizer
    (y - 2 * x).pow(2).sum().backward()  # a target twice as wide pulls the scale up
    assert q.learned_scale.grad is not None and float(q.learned_scale.grad) < 0
    with pytest.raises(VitqError, match="end_learning"):
        q.enable()
    with torch.no_grad():
        q.learned_scale.mul_(1.5)
    q.end_learning()
    assert q.state == "off" and not hasattr(q, "learned_scale")
    assert torch.allclose(q.scale, 1.5 * s0)
    q.enable()
    assert q(x).unique().numel() <= 16


def test_learn_refused_without_qparams_or_on_log_grids():
    with pytest.raises(VitqError, match="learn"):
        Quantizer(QuantSpec(4)).learn()
    q = Quantizer(QuantSpec(4, scheme="log2"))
    q.observe_tensor(torch.rand(10))
    q.solve()
    with pytest.raises(VitqError, match="affine"):
        q.learn()
