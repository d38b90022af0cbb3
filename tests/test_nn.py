"""Each quant layer equals its functional form exactly (atol=0), and freezing quantizes a weight once."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from torch import nn

from vitq import PerChannel, PerTensor, QuantSpec, VitqError, preset
from vitq.calibrate import calibrate, freeze
from vitq.convert import convert, named_quantizers
from vitq.nn import QuantAttention, QuantConv2d, QuantLinear, QuantMatMul

W8 = QuantSpec(8, symmetric=True)
A8 = QuantSpec(8, symmetric=False)


def fq(q, x):
    """The functional fake quant of a frozen quantizer: written from its qparams, not by calling it."""
    from vitq.primitives import dequantize, quantize

    xv, _ = q.spec.granularity.view(x, q.channel_axis)
    qmin, qmax = (int(v) for v in q.qrange)
    return dequantize(quantize(xv, q.scale, q.zero_point, qmin, qmax), q.scale, q.zero_point).reshape(x.shape)


def frozen_linear(out_q: bool = False):
    lin = nn.Linear(16, 12)
    w_float = lin.weight.detach().clone()
    m = QuantLinear.from_float(lin)
    m.input_quantizer.configure(A8)
    m.weight_quantizer.configure(QuantSpec(4, granularity=PerChannel()))
    if out_q:
        m.output_quantizer.configure(A8)
    m.input_quantizer.observe_tensor(torch.randn(32, 16))
    if out_q:
        m.output_quantizer.observe_tensor(lin(torch.randn(32, 16)).detach())
    m.freeze()
    return m, w_float


def test_quant_linear_equals_functional_form():
    m, w_float = frozen_linear(out_q=True)
    x = torch.randn(5, 16)
    expected = fq(m.output_quantizer, F.linear(fq(m.input_quantizer, x), fq(m.weight_quantizer, w_float), m.bias))
    assert torch.equal(m(x), expected)


def test_weight_quantized_once_and_stored_as_int():
    m, w_float = frozen_linear()
    assert "weight" not in dict(m.named_parameters())
    assert m.weight_int.dtype == torch.int8
    assert m.weight_int.min() >= -8 and m.weight_int.max() <= 7  # 4-bit codes
    assert torch.equal(m.weight, fq(m.weight_quantizer, w_float))
    # the stored weight is a fixed point of the quantizer: it is never rounded again
    assert torch.equal(m.weight_quantizer.quantize_int(m.weight), m.weight_int.float())
    with pytest.raises(VitqError, match="already frozen"):
        m.freeze()


def test_quant_conv_equals_functional_form():
    conv = nn.Conv2d(3, 8, 4, stride=4)
    w_float = conv.weight.detach().clone()
    m = QuantConv2d.from_float(conv)
    m.input_quantizer.configure(A8)
    m.weight_quantizer.configure(QuantSpec(6, granularity=PerChannel()))
    x = torch.randn(2, 3, 16, 16)
    m.input_quantizer.observe_tensor(x)
    m.freeze()
    assert m.weight_quantizer.scale.shape == (8, 1, 1, 1)
    expected = F.conv2d(fq(m.input_quantizer, x), fq(m.weight_quantizer, w_float), m.bias, stride=4)
    assert torch.equal(m(x), expected)


def test_quant_matmul_equals_functional_form():
    m = QuantMatMul()
    m.a_quantizer.configure(A8)
    m.b_quantizer.configure(QuantSpec(4, symmetric=True))
    a, b = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 8, 5)
    m.a_quantizer.observe_tensor(a)
    m.b_quantizer.observe_tensor(b)
    m.freeze()
    assert torch.equal(m(a, b), fq(m.a_quantizer, a) @ fq(m.b_quantizer, b))


def calibrated_attention(qkv_mode="split", bits=6):
    attn = Attention(24, num_heads=3, qkv_bias=True).eval()
    attn.fused_attn = True
    model = nn.Sequential(attn)
    qm = convert(model, preset(f"w{bits}a{bits}", qkv=qkv_mode))
    x = torch.randn(4, 7, 24)
    calibrate(qm, [x], show_progress=False)
    freeze(qm)
    return attn, qm[0], x


def reference_attention(qa: QuantAttention, x: torch.Tensor, split: bool) -> torch.Tensor:
    """Attention written out with explicit fake quant at every point the design names."""
    B, N, C = x.shape
    H, D = qa.num_heads, qa.head_dim
    qkv = F.linear(fq(qa.qkv.input_quantizer, x), qa.qkv.weight, qa.qkv.bias)
    if split:
        q, k, v = fq(qa.q_quantizer, qkv[..., :C]), fq(qa.k_quantizer, qkv[..., C:2 * C]), \
            fq(qa.v_quantizer, qkv[..., 2 * C:])
    else:
        qkv = fq(qa.qkv.output_quantizer, qkv)
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    q, k, v = (t.reshape(B, N, H, D).transpose(1, 2) for t in (q, k, v))
    attn = ((q * D ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = fq(qa.matmul_av.a_quantizer, attn) @ v
    out = out.transpose(1, 2).reshape(B, N, C)
    return F.linear(fq(qa.proj.input_quantizer, out), qa.proj.weight, qa.proj.bias)


@pytest.mark.parametrize("mode", ["split", "fused"])
def test_quant_attention_equals_functional_form(mode):
    _, qa, x = calibrated_attention(mode)
    assert torch.equal(qa(x), reference_attention(qa, x, split=mode == "split"))


def test_split_gives_qkv_weight_three_scales():
    _, qa, _ = calibrated_attention("split")
    wq = qa.qkv.weight_quantizer
    assert wq.scale.shape == (72, 1)  # per-channel rows by default
    qm = convert(nn.Sequential(Attention(24, num_heads=3)),
                 preset("w8a8", w_granularity=PerTensor()))
    qa = qm[0]
    assert qa.qkv.weight_quantizer.spec.granularity.num_blocks == 3  # per-tensor became one scale per Q/K/V block
    calibrate(qm, [torch.randn(2, 5, 24)], show_progress=False)
    freeze(qm)
    assert qa.qkv.weight_quantizer.scale.numel() == 3
    assert qa.proj.weight_quantizer.scale.numel() == 1


def test_fused_mode_uses_one_output_quantizer():
    _, qa, _ = calibrated_attention("fused")
    assert qa.qkv.output_quantizer.has_qparams and qa.qkv.output_quantizer.scale.numel() == 1
    assert not any(q.enabled for q in (qa.q_quantizer, qa.k_quantizer, qa.v_quantizer))


def test_attention_off_equals_timm_both_paths():
    for fused in (True, False):
        attn = Attention(24, num_heads=3, qkv_bias=True).eval()
        attn.fused_attn = fused
        qa = QuantAttention.from_float(attn)
        x = torch.randn(2, 9, 24)
        with torch.no_grad():
            assert torch.equal(qa(x), attn(x))


def test_attention_mask_supported():
    attn = Attention(24, num_heads=3).eval()
    attn.fused_attn = False
    qa = QuantAttention.from_float(attn)
    x = torch.randn(2, 5, 24)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        assert torch.equal(qa(x, attn_mask=mask), attn(x, attn_mask=mask))


@pytest.mark.parametrize("kwargs,name", [({"qk_norm": True, "norm_layer": nn.LayerNorm}, "qk_norm"),
                                         ({"scale_norm": True, "norm_layer": nn.LayerNorm}, "scale_norm")])
def test_unsupported_attention_options_refused(kwargs, name):
    with pytest.raises(VitqError, match=name):
        QuantAttention.from_float(Attention(24, num_heads=3, **kwargs))


def test_quantizer_names_follow_the_notes():
    qm = convert(nn.Sequential(Attention(24, num_heads=3)), "w8a8")
    names = {n for n, q in named_quantizers(qm) if q.enabled}
    assert {"0.q_quantizer", "0.k_quantizer", "0.v_quantizer", "0.matmul_av.a_quantizer",
            "0.qkv.input_quantizer", "0.qkv.weight_quantizer", "0.proj.input_quantizer"} <= names
    assert "0.qkv.output_quantizer" not in names
