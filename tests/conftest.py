"""Shared fixtures: paths to the optional shared model/data (tests skip cleanly without them), small models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR_MODEL = SHARED / "models" / "cifar10_vit_tiny" / "cifar10_vit_tiny.safetensors"
CIFAR_DATA = SHARED / "data" / "cifar10"
IMAGENET_VAL = SHARED / "data" / "imagenet-val-1300"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def need(path: Path, what: str) -> Path:
    """Skip the test (with a reason) when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_vit():
    """A random-init 2-block timm ViT small enough for exact-equality tests."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=48, depth=2,
                             num_heads=3, mlp_ratio=2.0, qkv_bias=True).eval()


@pytest.fixture
def cifar_model():
    from vitq.models import load_model

    return load_model(checkpoint=str(need(CIFAR_MODEL, "shared CIFAR-10 ViT")))
