"""Quantizer states, freeze-once, and qparams in the state dict."""
import pytest
import torch

from vitq import PerChannel, QuantSpec, VitqError
from vitq.quantizer import Quantizer


def test_states():
    q = Quantizer(QuantSpec(4, symmetric=False))
    x = torch.randn(3, 5)
    assert q(x) is x  # off: identity
    q.set_state("observe")
    assert q(x) is x  # observing does not change values
    with pytest.raises(VitqError, match="not frozen"):
        q.set_state("quantize")
    q.freeze()
    assert q.state == "quantize" and q.frozen
    assert not torch.equal(q(x), x)
    assert q(x).unique().numel() <= 16


def test_freeze_twice_refused():
    q = Quantizer(QuantSpec(8))
    q.observe_tensor(torch.randn(10))
    q.freeze()
    with pytest.raises(VitqError, match="already frozen"):
        q.freeze()
    with pytest.raises(VitqError, match="frozen"):
        q.set_state("observe")


def test_freeze_without_data_refused():
    q = Quantizer(QuantSpec(8))
    with pytest.raises(VitqError, match="no calibration data"):
        q.freeze()


def test_disabled_quantizer_stays_off():
    q = Quantizer(None)
    q.set_state("observe")
    q.freeze()
    x = torch.randn(4)
    assert q(x) is x and not q.frozen


def test_qparams_travel_with_state_dict():
    q = Quantizer(QuantSpec(6, granularity=PerChannel()))
    x = torch.randn(7, 9)
    q.observe_tensor(x)
    q.freeze()
    fresh = Quantizer(QuantSpec(6, granularity=PerChannel()))
    fresh.load_state_dict(q.state_dict())
    assert fresh.frozen and fresh.state == "quantize"
    assert torch.equal(fresh(x), q(x))
    assert set(q.state_dict()) == {"scale", "zero_point", "qrange"}


def test_quantize_int_dequantize_int_roundtrip():
    q = Quantizer(QuantSpec(4, granularity=PerChannel()), channel_axis=0)
    w = torch.randn(6, 10)
    q.observe_tensor(w)
    q.freeze()
    codes = q.quantize_int(w)
    assert torch.equal(q.quantize_int(q.dequantize_int(codes)), codes)
    assert torch.equal(q.dequantize_int(codes), q(w))
