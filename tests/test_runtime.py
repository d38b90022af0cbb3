"""Int8Linear: integer GEMM equal to the fake-quant layer (exact integer part), whole-model parity, refusals."""
import pytest
import torch
from torch import nn

import vitq
from vitq import QuantSpec, VitqError
from vitq.nn import QuantLinear
from vitq.runtime import Int8Linear, lower


def frozen_linear(symmetric_input: bool, w_bits: int = 8) -> QuantLinear:
    m = QuantLinear.from_float(nn.Linear(64, 24))
    m.input_quantizer.configure(QuantSpec(8, symmetric=symmetric_input))
    m.weight_quantizer.configure(QuantSpec(w_bits, granularity=vitq.PerChannel()))
    m.input_quantizer.observe_tensor(torch.randn(50, 64) + (0 if symmetric_input else 0.7))
    m.freeze()
    return m


@pytest.mark.parametrize("symmetric_input", [False, True])
def test_int8_linear_matches_fake_quant(symmetric_input):
    layer = frozen_linear(symmetric_input)
    il = Int8Linear.from_quant_linear(layer)
    x = torch.randn(3, 9, 64)
    with torch.no_grad():
        ref, out = layer(x), il(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the integer part against an int64 reference written out by hand
    iq = layer.input_quantizer
    q = torch.clamp(torch.round(x.reshape(-1, 64) * (1.0 / iq.scale)) + iq.zero_point, *iq.qrange.tolist())
    acc = ((q.long() - int(iq.zero_point)) @ layer.weight_int.long().t())
    expected = acc.double() * (iq.scale.double() * layer.weight_quantizer.scale.reshape(-1).double()) + \
        layer.bias.double()
    torch.testing.assert_close(out.reshape(-1, 24).double(), expected, atol=1e-5, rtol=1e-5)


def test_whole_model_parity(tiny_vit):
    calib = [torch.randn(16, 3, 32, 32)]
    qm = vitq.quantize(tiny_vit, "w8a8", calib=calib, show_progress=False)
    im, report = lower(qm, kernels=("int8",))
    assert len(report["int8"]) == 9 and report["kept"] == {}  # 2 x (qkv, proj, fc1, fc2) + head
    assert sum(isinstance(m, Int8Linear) for m in im.modules()) == 9
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a, b = qm(x), im(x)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_ineligible_layers_kept_with_reason(tiny_vit):
    qm = vitq.quantize(tiny_vit, "w4a4", calib=[torch.randn(4, 3, 32, 32)], show_progress=False)
    _, report = lower(qm, kernels=("int8",))
    assert report["int8"] == [] and all("8-bit" in r for r in report["kept"].values())
    with pytest.raises(VitqError, match="frozen"):
        lower(vitq.convert(tiny_vit, "w8a8"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_linear_on_cuda():
    layer = frozen_linear(False)
    il = Int8Linear.from_quant_linear(layer).cuda()
    x = torch.randn(4, 64)
    with torch.no_grad():
        torch.testing.assert_close(il(x.cuda()).cpu(), layer(x), atol=1e-4, rtol=1e-4)
