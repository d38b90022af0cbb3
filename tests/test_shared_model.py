"""The shared, really trained CIFAR-10 ViT on real CIFAR-10 images (skipped when ../shared is absent)."""
import pytest
import torch

import vitq
from vitq.primitives import sqnr_db

from .conftest import CIFAR_DATA, need


@pytest.fixture(scope="module")
def cifar_loaders():
    from vitq.models import load_model

    from .conftest import CIFAR_MODEL  # noqa: E402

    model = load_model(checkpoint=str(need(CIFAR_MODEL, "shared CIFAR-10 ViT")))
    need(CIFAR_DATA, "shared CIFAR-10 images")
    calib, val, info = vitq.loaders(model, CIFAR_DATA, calib_size=128, limit=600, batch_size=100, seed=0)
    return model, calib, val, info


def test_w8a8_within_half_a_point_of_float(cifar_loaders):
    model, calib, val, info = cifar_loaders
    assert info.calib_split == "train" and info.split == "test" and info.eval_images == 600
    qmodel = vitq.quantize(model, "w8a8", calib=calib, show_progress=False)
    res = vitq.evaluate(qmodel, val, float_model=model, show_progress=False)
    assert res["fp_top1"] > 70.0  # the real model, on real images
    assert abs(res["top1"] - res["fp_top1"]) <= 0.5
    assert res["agreement"] >= 97.0


def test_w8a8_logits_sqnr_floor(cifar_loaders):
    model, calib, val, _ = cifar_loaders
    qmodel = vitq.quantize(model, "w8a8", calib=calib, show_progress=False)
    images, _ = next(iter(val))
    with torch.no_grad():
        assert sqnr_db(model(images), qmodel(images)) > 20.0


def test_split_beats_fused_qkv_at_w4a4_on_v(cifar_loaders):
    """Finding 1 on the real model: a V quantizer of its own is more accurate than one scale over Q|K|V."""
    model, calib, val, _ = cifar_loaders
    images, _ = next(iter(val))
    errs = {}
    for mode in ("split", "fused"):
        qm = vitq.quantize(model, vitq.preset("w4a4", qkv=mode), calib=calib, show_progress=False)
        captured = {}
        attn, fattn = qm.blocks[5].attn, model.blocks[5].attn
        h1 = fattn.qkv.register_forward_hook(lambda m, i, o: captured.__setitem__("ref", o))
        with torch.no_grad():
            model(images)
        h1.remove()
        ref_v = captured["ref"][..., 384:]
        # quantized V of this block given float input to the qkv linear: isolate the qkv quantizer's error
        with torch.no_grad():
            x = captured["ref"]
            v_q = attn.v_quantizer(x[..., 384:]) if mode == "split" else attn.qkv.output_quantizer(x)[..., 384:]
        errs[mode] = sqnr_db(ref_v, v_q)
    assert errs["split"] > errs["fused"]
