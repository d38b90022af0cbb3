"""Datasets, preprocessing and loaders for calibration and evaluation.

Two on-disk layouts are understood:

* an ImageFolder tree, ``ROOT/<split>/<class>/<image>`` (CIFAR-10 as ``train/`` and ``test/``, ImageNet as
  ``val/<wnid>/*.JPEG``). Folders named like ImageNet synsets (``n01440764``) are labelled by their index among
  the 1,000 ImageNet classes, not by their position in the folder listing, so a partial ImageNet copy still
  gets the right labels;
* a folder holding the four Fashion-MNIST idx files (``train-images-idx3-ubyte[.gz]`` ...), as Debian's
  ``dataset-fashion-mnist`` package installs them.

Bad input fails early and in one line (:class:`VitqError` naming the file): hidden entries (``.ipynb_checkpoints``)
and folders named like images are skipped, every image header is read when a dataset is opened, an image that
still fails to decode later is reported by name (also from loader workers), and :func:`check_classes` compares the
labels with the model's head. 16-bit grayscale images are scaled to 8 bit rather than clipped to white.

Preprocessing follows the model (see :class:`vitq.models.DataConfig`), and calibration subsets are drawn
reproducibly from a seed.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import VitqError

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_WNID = re.compile(r"^n\d{8}$")
# How Pillow fails on a file that is not a readable image: not an image, truncated, corrupt, or too many pixels.
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)
# Modes Pillow gives 16-bit grayscale ("I" is what several readers use for it); their 0..65535 maps to 0..255.
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array of its stored shape and dtype (uint8 here)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz, an unreadable file
        raise VitqError(f"cannot read {path}: {(str(e).splitlines() or [type(e).__name__])[0]}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise VitqError(f"{path} is not an idx file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise VitqError(f"{path}: unknown idx element type {data[2]:#x}")
    ndim = data[3]
    offset = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = offset + int(np.prod(dims)) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise VitqError(f"{path} is damaged: its header announces {expected} bytes, the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


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
        self.root = root
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
    """The 1,000 ImageNet-1k wnids in class-index order, from the list timm ships (found without importing timm,
    which takes seconds)."""
    path = Path(importlib.util.find_spec("timm").origin).parent / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


@contextmanager
def _image_errors(path: Path):
    """Turn every way Pillow fails on ``path`` into one VitqError naming it (a DecompressionBombWarning too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except _IMAGE_ERRORS as e:
            raise VitqError(f"cannot read image {path}: {_image_error_reason(e)}") from e


def _image_error_reason(e: Exception) -> str:
    """Pillow's complaint in a few words: the first line of its message, or what the error's type says."""
    if isinstance(e, UnidentifiedImageError):  # its message only repeats the path
        return "not an image Pillow can read"
    lines = str(e).splitlines()
    return lines[0][:200] if lines else type(e).__name__


def check_image_header(path: Path) -> None:
    """Raise VitqError unless ``path`` opens as an image of a safe size. Reads the header only (cheap), so a
    truncated file passes here and is caught when it is decoded (:func:`read_image`)."""
    with _image_errors(path), Image.open(path):
        pass


def read_image(path: Path, mode: str) -> Image.Image:
    """Decode ``path`` fully into PIL ``mode``; a file that cannot be decoded raises VitqError naming it."""
    with _image_errors(path), Image.open(path) as img:
        return convert_image(img, mode)


def convert_image(img: Image.Image, mode: str) -> Image.Image:
    """A new, fully decoded copy of ``img`` in PIL ``mode``. 16-bit grayscale is scaled to 8 bit first: Pillow's
    own conversion clips every value above 255, which turns a 16-bit picture (nearly) white."""
    if img.mode in _SIXTEEN_BIT_MODES and mode != img.mode:
        eight_bit = np.clip(np.rint(np.asarray(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(eight_bit)  # mode "L"
    return img.convert(mode)


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` sorted by name, without hidden ones (``.ipynb_checkpoints``, ``.DS_Store``)."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` images. Class index: ImageNet synset index for wnid folders, else sorted order.

    Hidden entries are ignored, and only regular files with an image extension are images (a folder named
    ``x.jpg`` is not). ``classes`` lists the class folder names in sorted order; ``imagenet_labels`` says whether
    labels are synset indices (so a partial copy of ImageNet is fine) or positions in ``classes``.
    """

    _EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}

    def __init__(self, root: Path, transform=None, mode: str = "RGB"):
        root = Path(root)
        if not root.is_dir():
            raise VitqError(f"image folder {root} does not exist")
        self.root = root
        class_dirs = [e for e in _visible_entries(root) if e.is_dir()]
        if not class_dirs:
            raise VitqError(f"{root} has no class folders")
        self.classes = [e.name for e in class_dirs]
        self.imagenet_labels = all(_WNID.match(n) for n in self.classes)
        if self.imagenet_labels:
            index = {w: i for i, w in enumerate(imagenet_synsets())}
            unknown = [n for n in self.classes if n not in index]
            if unknown:
                raise VitqError(f"{root}: folders {unknown[:3]} are not ImageNet-1k synsets")
            self.class_to_idx = {n: index[n] for n in self.classes}
        else:
            self.class_to_idx = {n: i for i, n in enumerate(self.classes)}
        self.samples = [(Path(f.path), self.class_to_idx[d.name]) for d in class_dirs
                        for f in _visible_entries(Path(d.path))
                        if f.is_file() and os.path.splitext(f.name)[1].lower() in self._EXTS]
        if not self.samples:
            raise VitqError(f"{root} has class folders but no images")
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.mode = mode

    def verify(self) -> None:
        """Read every image's header so that files that are not images, or are too large to decode safely, are
        reported when the dataset is opened rather than after calibration has run (about 1 s per 10,000 small
        files). Raises one VitqError naming the first bad file and counting the others."""
        bad = []
        for path, _ in self.samples:
            try:
                check_image_header(path)
            except VitqError as e:
                bad.append(str(e))
        if bad:
            more = f" (and {len(bad) - 1} more unreadable images under {self.root})" if len(bad) > 1 else ""
            raise VitqError(bad[0] + more)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        img = read_image(path, self.mode)
        return (self.transform(img) if self.transform else img), target


def _base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any number of ``Subset`` wrappers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def check_classes(dataset: Dataset, num_classes: Optional[int]) -> None:
    """Raise VitqError when ``dataset``'s labels do not fit a ``num_classes``-way classifier head.

    A dataset labelled by class position (an ImageFolder without ImageNet wnid folders, Fashion-MNIST) must have
    exactly ``num_classes`` classes: with a class folder missing, the sorted-order labels of the later ones shift
    and every score is silently wrong. Any dataset's labels must be below ``num_classes`` (ImageNet wnid folders
    have labels up to 999). ``Subset`` wrappers are looked through; ``num_classes`` None (unknown head) checks
    nothing. Use ``getattr(model, "num_classes", None)`` for a timm model.
    """
    if num_classes is None:
        return
    base = _base_dataset(dataset)
    where = getattr(base, "root", type(base).__name__)
    classes = getattr(base, "classes", None)
    if classes is not None and not getattr(base, "imagenet_labels", False) and len(classes) != num_classes:
        kind = "class folders" if isinstance(base, ImageFolderDataset) else "classes"
        effect = "labels would shift" if len(classes) < num_classes else \
            f"{', '.join(map(str, classes[num_classes:][:3]))} have no output in the model"
        raise VitqError(f"{where}: found {len(classes)} {kind} for a {num_classes}-class model: {effect}")
    targets = getattr(base, "targets", None)
    if targets is None or not len(targets):
        return
    for label in (int(max(targets)), int(min(targets))):
        if not 0 <= label < num_classes:
            folders = {i: name for name, i in getattr(base, "class_to_idx", {}).items()}
            folder = f" (folder {folders[label]})" if label in folders else ""
            raise VitqError(f"{where}: label {label}{folder} is out of range for a {num_classes}-class model")


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
        return convert_image(img, self.mode)


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


def open_dataset(root, split: str, cfg: DataConfig, verify: bool = True) -> Dataset:
    """The ``split`` of the data at ``root`` with the model's preprocessing.

    ``root`` is an ImageFolder tree with ``root/<split>/`` folders, or a Fashion-MNIST idx folder. With
    ``verify`` every image header of an ImageFolder is read now (see :meth:`ImageFolderDataset.verify`), so
    that a bad file stops a run before calibration rather than during evaluation.
    """
    root = Path(root)
    if not root.is_dir():
        raise VitqError(f"data folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}")
    transform = build_transform(cfg)
    if is_fashion_mnist_root(root):
        return FashionMNIST(root, split, transform)
    split_dir = root / split
    if split_dir.is_dir():
        dataset = ImageFolderDataset(split_dir, transform, mode="L" if cfg.input_size[0] == 1 else "RGB")
        if verify:
            dataset.verify()
        return dataset
    subdirs = [e.name for e in _visible_entries(root) if e.is_dir()]
    raise VitqError(f"{root} has no '{split}' split (found: {', '.join(subdirs[:6]) or 'nothing'})")


def has_split(root, split: str) -> bool:
    """True when the data at ``root`` has a ``split`` (a ``root/<split>/`` folder, or Fashion-MNIST idx files)."""
    root = Path(root)
    if is_fashion_mnist_root(root):
        return split in _IDX_FILES and all(_find_idx(root, stem) for stem in _IDX_FILES[split])
    return (root / split).is_dir()


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


class _Loader(DataLoader):
    """A DataLoader whose workers' VitqErrors reach the caller as the worker's one-line message: torch re-raises
    a worker's exception with the whole worker traceback as its message."""

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except VitqError as e:
                raise VitqError(_worker_error_message(str(e))) from None
            yield batch


def _worker_error_message(message: str) -> str:
    """The original message inside torch's "Caught VitqError in DataLoader worker ..." traceback text (its last
    line, ``vitq.errors.VitqError: <message>``); a one-line message is returned as it is."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return message
    _, found, original = lines[-1].partition("VitqError: ")
    return original if found else lines[-1]


def make_loader(dataset: Dataset, batch_size: int = 64, workers: int = 0, shuffle: bool = False,
                seed: int = 0) -> DataLoader:
    """A DataLoader with a seeded shuffle (when asked) and workers that persist across epochs. An image that
    fails to decode in a worker raises the same one-line VitqError as without workers."""
    g = torch.Generator().manual_seed(seed)
    return _Loader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g,
                   persistent_workers=workers > 0)
