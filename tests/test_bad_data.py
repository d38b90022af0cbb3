"""Bad image data fails early with one line naming the file, or is read correctly: files that are not images,
truncated JPEGs, folders named like images, decompression bombs, 16-bit PNGs, hidden folders, loader workers, and
datasets whose classes do not fit the model's head."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vitq import VitqError
from vitq.data import (DataConfig, FashionMNIST, ImageFolderDataset, check_classes, convert_image, make_loader,
                       open_dataset, random_subset)

from .test_data import write_idx

RGB8 = DataConfig((3, 8, 8), (0.0,) * 3, (1.0,) * 3)  # identity normalization: tensors are pixel / 255


def image_folder(root, classes=("a", "b"), per_class=1, size=8):
    """``root/test/<class>/<i>.png`` with small solid images; returns the split folder."""
    split = root / "test"
    for c, name in enumerate(classes):
        (split / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (10 * c, 20, 30)).save(split / name / f"{i}.png")
    return split


def truncated_jpeg(path):
    """A JPEG cut in half: its header is intact, decoding it fails."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_file_that_is_not_an_image_fails_when_opened(tmp_path):
    split = image_folder(tmp_path)
    (split / "a" / "notes.jpg").write_text("not a picture")
    (split / "b" / "empty.png").write_bytes(b"")
    with pytest.raises(VitqError, match=r"cannot read image .*a/notes\.jpg: not an image") as e:
        open_dataset(tmp_path, "test", RGB8)
    assert one_line(e).endswith(f"(and 1 more unreadable images under {split})")


def test_truncated_jpeg_fails_when_decoded_naming_the_file(tmp_path):
    split = image_folder(tmp_path)
    truncated_jpeg(split / "b" / "cut.jpg")
    ds = open_dataset(tmp_path, "test", RGB8)  # a header read cannot see the truncation
    assert [p.name for p, _ in ds.samples] == ["0.png", "0.png", "cut.jpg"]
    with pytest.raises(VitqError, match=r"cannot read image .*b/cut\.jpg: image file is truncated") as e:
        ds[2]
    one_line(e)
    assert ds[1][0].shape == (3, 8, 8)


def test_folder_named_like_an_image_is_skipped(tmp_path):
    split = image_folder(tmp_path)
    (split / "a" / "x.jpg").mkdir()
    ds = open_dataset(tmp_path, "test", RGB8)
    assert len(ds) == 2 and all(p.is_file() for p, _ in ds.samples)
    assert [ds[i][1] for i in range(2)] == [0, 1]


@pytest.mark.parametrize("max_pixels", [60, 100])  # 144 pixels: Pillow errors above 2x the limit, warns above 1x
def test_decompression_bomb_fails_when_opened(tmp_path, monkeypatch, max_pixels):
    split = image_folder(tmp_path, size=12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", max_pixels)
    with pytest.raises(VitqError, match=r"cannot read image .*0\.png: Image size \(144 pixels\) exceeds limit"):
        open_dataset(tmp_path, "test", RGB8)
    with pytest.raises(VitqError, match="exceeds limit"):  # decoding reports it too (when opened unverified)
        open_dataset(tmp_path, "test", RGB8, verify=False)[0]
    assert len(ImageFolderDataset(split)) == 2  # listing reads no image


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_reports_bad_image_in_one_line_with_workers(tmp_path, workers):
    split = image_folder(tmp_path)
    truncated_jpeg(split / "a" / "cut.jpg")
    loader = make_loader(open_dataset(tmp_path, "test", RGB8), batch_size=2, workers=workers)
    with pytest.raises(VitqError) as e:
        for _ in loader:
            pass
    assert one_line(e).startswith(f"cannot read image {split / 'a' / 'cut.jpg'}: image file is truncated")


def test_loader_still_yields_batches(tmp_path):
    image_folder(tmp_path, per_class=3)
    batches = list(make_loader(open_dataset(tmp_path, "test", RGB8), batch_size=4))
    assert [len(y) for _, y in batches] == [4, 2] and torch.cat([y for _, y in batches]).tolist() == [0] * 3 + [1] * 3


def test_16_bit_png_reads_like_the_8_bit_one(tmp_path):
    split = tmp_path / "test" / "a"
    split.mkdir(parents=True)
    gradient = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4 + 1  # 1 .. 253
    Image.fromarray(gradient).save(split / "g08.png")
    Image.fromarray(gradient.astype(np.uint16) * 257).save(split / "g16.png")
    assert Image.open(split / "g16.png").mode == "I;16"
    for cfg in (RGB8, DataConfig((1, 8, 8), (0.0,), (1.0,))):
        ds = open_dataset(tmp_path, "test", cfg)
        eight, sixteen = ds[0][0], ds[1][0]
        assert eight.shape == (cfg.input_size[0], 8, 8)
        torch.testing.assert_close(sixteen, eight, atol=1 / 255, rtol=0)
        assert abs(float(eight[0, 3, 5]) - (4 * 29 + 1) / 255) < 1e-6  # the real values, not white
    as_int32 = Image.fromarray(gradient.astype(np.int32) * 257)  # mode "I", how other readers give 16 bit
    assert np.array_equal(np.asarray(convert_image(as_int32, "L")), gradient)


def test_hidden_folders_and_files_are_ignored(tmp_path):
    split = image_folder(tmp_path)
    (split / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(split / ".ipynb_checkpoints" / "0.png")
    (split / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    ds = open_dataset(tmp_path, "test", RGB8)
    assert ds.class_to_idx == {"a": 0, "b": 1} and ds.targets == [0, 1]


def test_hidden_folder_keeps_imagenet_labels(tmp_path):
    for wnid in ("n01440764", "n15075141", ".ipynb_checkpoints"):  # synsets 0 and 999
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / wnid / "0.JPEG")
    ds = ImageFolderDataset(tmp_path)
    assert ds.imagenet_labels and ds.targets == [0, 999]


@pytest.mark.parametrize("folders, message", [
    (12, "found 12 class folders for a 10-class model: c10, c11 have no output in the model"),
    (9, "found 9 class folders for a 10-class model: labels would shift"),
])
def test_class_folders_must_match_the_head(tmp_path, folders, message):
    split = image_folder(tmp_path, classes=[f"c{i:02d}" for i in range(folders)])
    ds = open_dataset(tmp_path, "test", RGB8)
    for wrapped in (ds, random_subset(ds, 3, seed=0)):
        with pytest.raises(VitqError, match=f"^{re.escape(str(split))}: {message}$"):
            check_classes(wrapped, 10)
    check_classes(ds, folders)
    check_classes(ds, None)  # unknown head: nothing to check


def test_imagenet_labels_must_fit_the_head(tmp_path):
    for wnid in ("n01440764", "n15075141"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / wnid / "0.JPEG")
    ds = ImageFolderDataset(tmp_path)
    check_classes(ds, 1000)  # a partial ImageNet copy on a 1000-class head
    with pytest.raises(VitqError, match=r"label 999 \(folder n15075141\) is out of range for a 10-class model"):
        check_classes(ds, 10)


def test_fashion_mnist_has_ten_classes(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 4]))
    ds = FashionMNIST(tmp_path, "test")
    check_classes(ds, 10)
    with pytest.raises(VitqError, match="found 10 classes for a 12-class model: labels would shift"):
        check_classes(ds, 12)


def test_labels_of_any_dataset_must_fit_the_head():
    class Toy(torch.utils.data.Dataset):
        targets = [0, 3, 7]

    check_classes(Toy(), 8)
    with pytest.raises(VitqError, match="Toy: label 7 is out of range for a 5-class model"):
        check_classes(Toy(), 5)
