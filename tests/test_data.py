"""Data: idx reader, Fashion-MNIST, ImageFolder labels (ImageNet wnids), reproducible subsets."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from vitq import VitqError
from vitq.data import (DataConfig, FashionMNIST, ImageFolderDataset, build_transform, default_eval_split,
                       first_subset, imagenet_synsets, open_dataset, random_subset, read_idx)

from .conftest import CIFAR_DATA, FASHION_MNIST, IMAGENET_VAL, need


def write_idx(path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), a)
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(VitqError, match="not an idx file"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_layout(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    ds = FashionMNIST(tmp_path, "test")
    assert len(ds) == 5 and ds[3][1] == 3 and ds[0][0].size == (28, 28)
    with pytest.raises(VitqError, match="no Fashion-MNIST train"):
        FashionMNIST(tmp_path, "train")


def test_real_fashion_mnist():
    need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    cfg = DataConfig((1, 28, 28), (0.286,), (0.353,))
    ds = open_dataset(FASHION_MNIST, "test", cfg)
    assert len(ds) == 10000
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    assert default_eval_split(FASHION_MNIST) == "test"


def test_imagefolder_sorted_classes(tmp_path):
    for cls in ("b", "a"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "test" / cls / "0.png")
    ds = open_dataset(tmp_path, "test", DataConfig((3, 8, 8), (0.5,) * 3, (0.5,) * 3))
    assert ds.class_to_idx == {"a": 0, "b": 1}
    with pytest.raises(VitqError, match="no 'val' split"):
        open_dataset(tmp_path, "val", DataConfig((3, 8, 8), (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(VitqError, match="does not exist"):
        open_dataset(tmp_path / "nope", "test", DataConfig((3, 8, 8), (0.5,) * 3, (0.5,) * 3))


def test_imagenet_wnids_map_to_synset_index():
    root = need(IMAGENET_VAL, "shared ImageNet validation images") / "val"
    ds = ImageFolderDataset(root)
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and len(ds) == 1300
    # a partial ImageNet folder: labels are synset indices, not folder positions
    for wnid, idx in list(ds.class_to_idx.items())[:50]:
        assert synsets[idx] == wnid
    assert max(ds.class_to_idx.values()) > len(ds.class_to_idx)


def test_imagenet_preprocessing_to_224():
    root = need(IMAGENET_VAL, "shared ImageNet validation images")
    cfg = DataConfig((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
    ds = open_dataset(root, default_eval_split(root), cfg)
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and 0 <= y < 1000


def test_cifar_split_and_transform():
    need(CIFAR_DATA, "shared CIFAR-10 images")
    cfg = DataConfig((3, 32, 32), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), "bilinear", 1.0)
    ds = open_dataset(CIFAR_DATA, "test", cfg)
    assert len(ds) == 10000 and ds[0][0].shape == (3, 32, 32)


def test_subsets_reproducible_and_balanced():
    class Toy(torch.utils.data.Dataset):
        targets = [i // 10 for i in range(100)]

        def __len__(self):
            return 100

        def __getitem__(self, i):
            return i, self.targets[i]

    a, b, c = (random_subset(Toy(), 20, s) for s in (1, 1, 2))
    assert a.indices == b.indices and a.indices != c.indices
    f = first_subset(Toy(), 30)
    assert sorted({Toy.targets[i] for i in f.indices}) == list(range(10))
    transform = build_transform(DataConfig((3, 16, 16), (0.5,) * 3, (0.5,) * 3))
    assert transform(Image.new("L", (40, 30))).shape == (3, 16, 16)
