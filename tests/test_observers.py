"""Observers: statistics against torch reductions, search results against min-max, degenerate inputs."""
import pytest
import torch

from vitq import PerChannel, PerTensor, QuantSpec, VitqError
from vitq.observers import make_observer
from vitq.primitives import fake_quantize


def spec(observer="minmax", granularity=PerTensor(), bits=8, symmetric=False, **args):
    return QuantSpec(bits, symmetric, granularity, observer, tuple(sorted(args.items())))


def test_minmax_accumulates_over_batches():
    obs = make_observer(spec(granularity=PerChannel()))
    a, b = torch.randn(4, 10, 6), torch.randn(7, 10, 6) * 3
    obs.update(a)
    obs.update(b)
    both = torch.cat([a, b])
    assert torch.equal(obs.min_val.reshape(-1), both.amin((0, 1)))
    assert torch.equal(obs.max_val.reshape(-1), both.amax((0, 1)))


def test_ema():
    obs = make_observer(spec("ema", momentum=0.5))
    obs.update(torch.tensor([-1.0, 1.0]))
    obs.update(torch.tensor([-3.0, 5.0]))
    assert obs.min_val.item() == -2.0 and obs.max_val.item() == 3.0


def test_percentile_matches_torch_quantile():
    x = torch.randn(20000)
    obs = make_observer(spec("percentile", percentile=99.0))
    obs.update(x)
    assert obs.max_val.item() == pytest.approx(torch.quantile(x, 0.99).item(), abs=2e-3)
    assert obs.min_val.item() == pytest.approx(torch.quantile(x, 0.01).item(), abs=2e-3)


def test_percentile_per_channel_vectorized():
    x = torch.randn(500, 4) * torch.tensor([1.0, 2.0, 4.0, 8.0])
    obs = make_observer(spec("percentile", granularity=PerChannel(), percentile=99.0))
    obs.update(x)
    ref = torch.quantile(x, 0.99, dim=0)
    torch.testing.assert_close(obs.max_val.reshape(-1), ref, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("name", ["mse", "omse"])
def test_search_beats_minmax_on_heavy_tails(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[:5] = 40.0  # a few outliers stretch min-max
    s = spec(name, bits=4)
    mm = make_observer(spec("minmax", bits=4))
    obs = make_observer(s)
    mm.update(x)
    obs.update(x)
    err = {}
    for label, o in (("minmax", mm), (name, obs)):
        scale, zp, qmin, qmax = o.solve()
        err[label] = (fake_quantize(x, scale, zp, qmin, qmax) - x).pow(2).mean().item()
    assert err[name] < err["minmax"] * 0.7


def test_mse_per_channel_shapes():
    obs = make_observer(spec("mse", granularity=PerChannel(), bits=4))
    obs.update(torch.randn(8, 16, 5))
    scale, zp, qmin, qmax = obs.solve()
    assert scale.shape == (1, 1, 5) and (scale > 0).all()


@pytest.mark.parametrize("name", ["minmax", "ema", "percentile", "mse", "omse"])
@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_constant_inputs_give_finite_positive_scale(name, value):
    for sym in (True, False):
        obs = make_observer(spec(name, symmetric=sym, bits=4))
        obs.update(torch.full((100,), value))
        scale, zp, qmin, qmax = obs.solve()
        assert torch.isfinite(scale).all() and (scale > 0).all() and torch.isfinite(zp).all()
        out = fake_quantize(torch.full((100,), value), scale, zp, qmin, qmax)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["minmax", "ema", "percentile", "mse", "omse"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_raise(name, bad):
    obs = make_observer(spec(name))
    x = torch.randn(10)
    x[3] = bad
    with pytest.raises(VitqError, match="NaN|infinite"):
        obs.update(x)


def test_solve_without_data_raises():
    with pytest.raises(VitqError, match="no data"):
        make_observer(spec()).solve()


def test_auto_sign():
    obs = make_observer(spec(symmetric=True))
    obs.update(torch.rand(100))  # non-negative, like a softmax output
    assert obs.solve()[2:] == (0, 255)
    obs = make_observer(spec(symmetric=True))
    obs.update(torch.randn(100))
    assert obs.solve()[2:] == (-128, 127)


def test_bad_observer_args():
    with pytest.raises(VitqError, match="bad observer_args"):
        make_observer(spec("minmax", nonsense=1))
    with pytest.raises(VitqError, match="unknown observer"):
        QuantSpec(observer="magic")
