"""Datasets, preprocessing and loaders for calibration and evaluation.

Two on-disk layouts are understood:

* an ImageFolder tree, ``ROOT/<split>/<class>/<image>`` (CIFAR-10 as ``train/`` and ``test/``, ImageNet as
  ``val/<wnid>/*.JPEG``). Folders named like ImageNet synsets (``n01440764``) are labelled by their index among
  the 1,000 ImageNet classes, not by their position in the folder listing, so a partial ImageNet copy still
  gets the right labels;
* a folder holding the four Fashion-MNIST idx files (``train-images-idx3-ubyte[.gz]`` ...), as Debian's
  ``dataset-fashion-mnist`` package installs them.

Preprocessing follows the model (see :class:`vitq.models.DataConfig`), and calibration subsets are drawn
reproducibly from a seed.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import VitqError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_WNID = re.compile(r"^n\d{8}$")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array of its stored shape and dtype (uint8 here)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise VitqError(f"{path} is not an idx file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise VitqError(f"{path}: unknown idx element type {data[2]:#x}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(root: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def is_fashion_mnist_root(root: Path) -> bool:
    """True when ``root`` holds at least one split of Fashion-MNIST idx files."""
    return any(_find_idx(Path(root), imgs) and _find_idx(Path(root), lbls) for imgs, lbls in _IDX_FILES.values())


class FashionMNIST(Dataset):
    """Fashion-MNIST read straight from its idx files: 28x28 grayscale PIL images and int labels."""

    classes = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot"]

    def __init__(self, root: Path, split: str = "test", transform=None):
        root = Path(root)
        if split not in _IDX_FILES:
            raise VitqError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
        imgs, lbls = (_find_idx(root, stem) for stem in _IDX_FILES[split])
        if imgs is None or lbls is None:
            raise VitqError(f"no Fashion-MNIST {split} idx files in {root}")
        self.images = read_idx(imgs)  # (N, 28, 28) uint8
        self.targets = read_idx(lbls).astype(np.int64)  # (N,)
        if len(self.images) != len(self.targets):
            raise VitqError(f"{root}: {len(self.images)} images but {len(self.targets)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i], mode="L")
        return (self.transform(img) if self.transform else img), int(self.targets[i])


def imagenet_synsets() -> list[str]:
    """The 1,000 ImageNet-1k wnids in class-index order, from the list timm ships."""
    import timm.data

    path = Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` images. Class index: ImageNet synset index for wnid folders, else sorted order."""

    _EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}

    def __init__(self, root: Path, transform=None, mode: str = "RGB"):
        root = Path(root)
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
        if not class_dirs:
            raise VitqError(f"{root} has no class folders")
        names = [p.name for p in class_dirs]
        if all(_WNID.match(n) for n in names):
            index = {w: i for i, w in enumerate(imagenet_synsets())}
            unknown = [n for n in names if n not in index]
            if unknown:
                raise VitqError(f"{root}: folders {unknown[:3]} are not ImageNet-1k synsets")
            self.class_to_idx = {n: index[n] for n in names}
        else:
            self.class_to_idx = {n: i for i, n in enumerate(names)}
        self.samples = [(f, self.class_to_idx[d.name]) for d in class_dirs for f in sorted(d.iterdir())
                        if f.suffix.lower() in self._EXTS]
        if not self.samples:
            raise VitqError(f"{root} has class folders but no images")
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with Image.open(path) as img:
            img = img.convert(self.mode)
        return (self.transform(img) if self.transform else img), target


@dataclass(frozen=True)
class DataConfig:
    """How a model wants its input: size, channels and normalization (what timm calls the data config)."""

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct}

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        return cls(tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bicubic"),
                   float(d.get("crop_pct", 1.0)))


def build_transform(cfg: DataConfig):
    """Evaluation preprocessing: resize (keeping ``crop_pct`` margin) and center crop to the model's size,
    convert to tensor, normalize. Images already at the model's size are only converted and normalized."""
    from torchvision import transforms as T

    c, h, w = cfg.input_size
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
              "nearest": T.InterpolationMode.NEAREST}.get(cfg.interpolation, T.InterpolationMode.BICUBIC)
    resize = int(round(h / cfg.crop_pct)) if cfg.crop_pct < 1.0 else h
    steps = [_ConvertMode("L" if c == 1 else "RGB"),
             _ResizeIfNeeded(resize, (h, w), interp), T.CenterCrop((h, w)), T.ToTensor(),
              T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(steps)


class _ConvertMode:
    """PIL mode conversion as a picklable transform (loader workers pickle the pipeline)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img if img.mode == self.mode else img.convert(self.mode)


class _ResizeIfNeeded:
    """Resize the short side to ``size`` unless the image already has the target (H, W)."""

    def __init__(self, size: int, target: tuple[int, int], interpolation):
        from torchvision import transforms as T

        self.target = target
        self.resize = T.Resize(size, interpolation=interpolation)

    def __call__(self, img):
        if (img.height, img.width) == self.target:
            return img
        return self.resize(img)


def open_dataset(root, split: str, cfg: DataConfig) -> Dataset:
    """The ``split`` of the data at ``root`` with the model's preprocessing.

    ``root`` is an ImageFolder tree with ``root/<split>/`` folders, a folder of class folders itself (when it
    has no ``<split>`` subfolder), or a Fashion-MNIST idx folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise VitqError(f"data folder {root} does not exist")
    transform = build_transform(cfg)
    if is_fashion_mnist_root(root):
        return FashionMNIST(root, split, transform)
    split_dir = root / split
    if split_dir.is_dir():
        return ImageFolderDataset(split_dir, transform, mode="L" if cfg.input_size[0] == 1 else "RGB")
    subdirs = [p.name for p in root.iterdir() if p.is_dir()]
    raise VitqError(f"{root} has no '{split}' split (found: {', '.join(sorted(subdirs)[:6]) or 'nothing'})")


def default_eval_split(root) -> str:
    """'test' when the data has a test split, else 'val'."""
    root = Path(root)
    if is_fashion_mnist_root(root) or (root / "test").is_dir():
        return "test"
    return "val"


def random_subset(dataset: Dataset, n: Optional[int], seed: int) -> Dataset:
    """``n`` items drawn without replacement with a seeded generator (all of them when n is None or too big)."""
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise VitqError(f"subset size must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n].sort().values.tolist()
    return Subset(dataset, idx)


def first_subset(dataset: Dataset, n: Optional[int]) -> Dataset:
    """The first ``n`` items (evaluation ``--limit``), stratified when the dataset is sorted by class."""
    if n is None or n >= len(dataset):
        return dataset
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return Subset(dataset, list(range(n)))
    # Round-robin over classes so a limit on a class-sorted folder still covers every class.
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    order, depth = [], 0
    while len(order) < n:
        for idx in by_class.values():
            if depth < len(idx):
                order.append(idx[depth])
        depth += 1
    return Subset(dataset, sorted(order[:n]))


def make_loader(dataset: Dataset, batch_size: int = 64, workers: int = 0, shuffle: bool = False,
                seed: int = 0) -> DataLoader:
    """A DataLoader with a seeded shuffle (when asked) and workers that persist across epochs."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g,
                      persistent_workers=workers > 0)
