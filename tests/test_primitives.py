"""Primitives against hand-written references and PyTorch's own fake-quant kernels."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitq import VitqError
from vitq.primitives import (EPS, dequantize, fake_quantize, qparams_from_minmax, qrange, quantize, sqnr_db)


def test_qrange():
    assert qrange(8, True) == (-128, 127)
    assert qrange(8, False) == (0, 255)
    assert qrange(4, True) == (-8, 7)
    assert qrange(2, False) == (0, 3)


@pytest.mark.parametrize("bits", [1, 9, 0, 4.0, "8", True])
def test_bad_bits_raise(bits):
    with pytest.raises(VitqError, match="bits must be"):
        qrange(bits, True)


def test_symmetric_qparams_by_hand():
    scale, zp = qparams_from_minmax(torch.tensor(-2.0), torch.tensor(1.0), 8, symmetric=True, signed=True)
    assert scale.item() == pytest.approx(2.0 / 127)
    assert zp.item() == 0


def test_asymmetric_qparams_by_hand():
    scale, zp = qparams_from_minmax(torch.tensor(-1.0), torch.tensor(3.0), 8, symmetric=False, signed=False)
    assert scale.item() == pytest.approx(4.0 / 255)
    assert zp.item() == round(1.0 / (4.0 / 255))
    # zero is exactly representable
    assert fake_quantize(torch.zeros(1), scale, zp, 0, 255).item() == 0.0


def test_range_widened_to_contain_zero():
    scale, zp = qparams_from_minmax(torch.tensor(2.0), torch.tensor(4.0), 8, symmetric=False, signed=False)
    assert zp.item() == 0 and scale.item() == pytest.approx(4.0 / 255)


def test_degenerate_stats_give_positive_scale():
    for lo, hi in [(0.0, 0.0), (5.0, 5.0), (-3.0, -3.0)]:
        for sym in (True, False):
            scale, zp = qparams_from_minmax(torch.tensor(lo), torch.tensor(hi), 4, sym, sym)
            assert torch.isfinite(scale) and scale > 0 and torch.isfinite(zp)
    scale, _ = qparams_from_minmax(torch.tensor(0.0), torch.tensor(0.0), 8, True, True)
    assert scale.item() == EPS


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stats_raise(bad):
    with pytest.raises(VitqError, match="NaN or infinite"):
        qparams_from_minmax(torch.tensor(bad), torch.tensor(1.0), 8, True, True)


def test_fake_quantize_matches_torch_per_tensor():
    x = torch.randn(64, 200) * 3
    scale, zp = qparams_from_minmax(x.min(), x.max(), 8, symmetric=False, signed=False)
    ref = torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zp.reshape(1).int(), 0, 255)
    assert torch.equal(fake_quantize(x, scale, zp, 0, 255), ref)


def test_fake_quantize_matches_torch_per_channel():
    x = torch.randn(32, 48) * torch.linspace(0.1, 10, 48)
    scale, zp = qparams_from_minmax(x.amin(0, keepdim=True), x.amax(0, keepdim=True), 8, True, True)
    ref = torch.fake_quantize_per_channel_affine(x, scale.reshape(-1), zp.reshape(-1).int(), 1, -128, 127)
    assert torch.equal(fake_quantize(x, scale, zp, -128, 127), ref)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), rows=st.integers(1, 8), cols=st.integers(1, 40),
       spread=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_quantize_dequantize_roundtrip(bits, symmetric, rows, cols, spread, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * spread
    signed = symmetric
    qmin, qmax = qrange(bits, signed)
    scale, zp = qparams_from_minmax(x.amin(1, keepdim=True), x.amax(1, keepdim=True), bits, symmetric, signed)
    q = quantize(x, scale, zp, qmin, qmax)
    assert q.min() >= qmin and q.max() <= qmax and torch.equal(q, q.round())
    # quantize(dequantize(q)) == q: a code is a fixed point, so re-quantizing never moves it
    assert torch.equal(quantize(dequantize(q, scale, zp), scale, zp, qmin, qmax), q)
    # fake_quantize is dequantize(quantize(x)), element for element
    assert torch.equal(fake_quantize(x, scale, zp, qmin, qmax), dequantize(q, scale, zp))
    # inside the range the error is at most half a step (plus float rounding)
    err = (fake_quantize(x, scale, zp, qmin, qmax) - x).abs()
    assert (err <= scale * 0.5 * (1 + 1e-5) + 1e-12).all()


def test_straight_through_gradient():
    x = torch.tensor([-2.0, -0.3, 0.2, 0.9, 5.0], requires_grad=True)
    scale, zp = torch.tensor(1.0 / 127), torch.tensor(0.0)
    y = fake_quantize(x, scale, zp, -128, 127)
    y.sum().backward()
    # passes inside [-128, 127] * scale, blocks outside
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    with torch.no_grad():
        assert torch.equal(y, fake_quantize(x.detach(), scale, zp, -128, 127))


def test_sqnr():
    x = torch.randn(1000)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0, abs=1e-4)
