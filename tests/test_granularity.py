"""Granularities against per-group loops written out by hand."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitq import PerBlock, PerChannel, PerGroup, PerHead, PerTensor, PerToken, QuantSpec, VitqError
from vitq.granularity import granularity_from_dict, granularity_to_dict
from vitq.primitives import fake_quantize, qparams_from_minmax, qrange
from vitq.quantizer import Quantizer


def fq_reference(group: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric fake quant of one group with its own min/max (float32 math), written out independently."""
    lo = torch.clamp(group.min(), max=0.0)
    hi = torch.clamp(group.max(), min=0.0)
    qmax = 2 ** bits - 1
    scale = torch.clamp((hi - lo) / qmax, min=torch.finfo(torch.float32).eps)
    zp = torch.clamp(-torch.round(lo / scale), 0, qmax)
    q = torch.clamp(torch.round(group * (1.0 / scale)) + zp, 0, qmax)
    return (q - zp) * scale


def calibrated(x, granularity, bits=4, channel_axis=-1):
    q = Quantizer(QuantSpec(bits, symmetric=False, granularity=granularity), channel_axis=channel_axis)
    q.observe_tensor(x)
    q.solve()
    q.enable()
    return q


def test_per_tensor_view():
    x = torch.randn(2, 3, 4)
    xv, dims = PerTensor().view(x, -1)
    assert xv.shape == x.shape and dims == (0, 1, 2)


def test_per_channel_matches_loop():
    x = torch.randn(5, 7, 6) * torch.arange(1, 7)
    q = calibrated(x, PerChannel())
    assert q.scale.shape == (1, 1, 6)
    out = q(x)
    for c in range(6):
        torch.testing.assert_close(out[..., c], fq_reference(x[..., c], 4), atol=1e-6, rtol=0)


def test_per_channel_weight_axis0():
    w = torch.randn(8, 5) * torch.arange(1, 9)[:, None]
    q = calibrated(w, PerChannel(), channel_axis=0)
    assert q.scale.shape == (8, 1)


def test_per_block_qkv_rows():
    w = torch.cat([torch.randn(4, 6), 10 * torch.randn(4, 6), 0.1 * torch.randn(4, 6)])  # Q, K, V row blocks
    q = calibrated(w, PerBlock(3, axis=0), channel_axis=0)
    assert q.scale.numel() == 3
    out = q(w)
    for b in range(3):
        torch.testing.assert_close(out[4 * b:4 * b + 4], fq_reference(w[4 * b:4 * b + 4], 4), atol=1e-6, rtol=0)


def test_per_head_groups_channels():
    x = torch.randn(2, 5, 12)
    q = calibrated(x, PerHead(3))
    out = q(x)
    for h in range(3):
        torch.testing.assert_close(out[..., 4 * h:4 * h + 4], fq_reference(x[..., 4 * h:4 * h + 4], 4), atol=1e-6,
                                   rtol=0)


def test_per_head_needs_binding():
    with pytest.raises(VitqError, match="set when the model is converted"):
        calibrated(torch.randn(2, 12), PerHead())


def test_per_group_weight_rows_and_groups():
    w = torch.randn(3, 8)
    q = calibrated(w, PerGroup(4), channel_axis=0)
    assert q.scale.shape == (3, 2, 1)
    out = q(w)
    for r in range(3):
        for g in range(2):
            torch.testing.assert_close(out[r, 4 * g:4 * g + 4], fq_reference(w[r, 4 * g:4 * g + 4], 4), atol=1e-6,
                                       rtol=0)


def test_per_group_bad_size():
    with pytest.raises(VitqError, match="multiple of group size"):
        calibrated(torch.randn(3, 10), PerGroup(4), channel_axis=0)


def test_per_token_is_dynamic():
    x = torch.randn(2, 5, 8) * torch.arange(1, 6)[None, :, None]
    q = Quantizer(QuantSpec(4, symmetric=False, granularity=PerToken()))
    q.solve()  # dynamic: nothing to observe, only the code range
    q.enable()
    assert q.scale.numel() == 0
    out = q(x)
    for b in range(2):
        for t in range(5):
            torch.testing.assert_close(out[b, t], fq_reference(x[b, t], 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("g", [PerTensor(), PerChannel(), PerChannel(0), PerToken(), PerBlock(3, 0), PerHead(4),
                               PerGroup(64), PerGroup(16, -1, None)])
def test_granularity_dict_roundtrip(g):
    assert granularity_from_dict(granularity_to_dict(g)) == g


def test_granularity_strings():
    assert granularity_from_dict("per_channel:0") == PerChannel(0)
    assert granularity_from_dict("per_group:32") == PerGroup(32)
    assert granularity_from_dict("per_head") == PerHead()
    with pytest.raises(VitqError, match="unknown granularity"):
        granularity_from_dict("per_pixel")


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), bits=st.integers(2, 8),
       kind=st.sampled_from(["tensor", "channel", "token"]), seed=st.integers(0, 1000))
def test_granularity_error_bounded(shape, bits, kind, seed):
    """Every element lands within half a step of its group's scale (min/max calibration never clips)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 5
    g = {"tensor": PerTensor(), "channel": PerChannel(), "token": PerToken()}[kind]
    q = Quantizer(QuantSpec(bits, symmetric=False, granularity=g))
    if not g.dynamic:
        q.observe_tensor(x)
    q.solve()
    q.enable()
    xv, dims = g.view(x, -1)
    scale, zp = qparams_from_minmax(xv.amin(dims, keepdim=True), xv.amax(dims, keepdim=True), bits, False, False)
    expected = fake_quantize(xv, scale, zp, *qrange(bits, False)).reshape(x.shape)
    assert torch.equal(q(x), expected)
    assert ((q(x) - x).abs() <= scale.max() / 2 * (1 + 1e-5)).all()
