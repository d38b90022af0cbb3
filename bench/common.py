"""Helpers shared by the benchmark scripts: the shared CIFAR-10 model and data as in-memory tensors, timing,
and writing one section of docs/results.md (each script owns the section between its markers)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import torch

import vitq
from vitq.data import first_subset, make_loader, open_dataset, random_subset
from vitq.models import data_config_of, load_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR_MODEL = SHARED / "models" / "cifar10_vit_tiny" / "cifar10_vit_tiny.safetensors"
CIFAR_DATA = SHARED / "data" / "cifar10"
RESULTS = REPO / "docs" / "results.md"


def load_cifar(calib_size: int = 256, seed: int = 0, limit: int | None = None):
    """(model, calib batches, test images, test labels): the whole test split decoded once into memory."""
    if not CIFAR_MODEL.is_file():
        raise SystemExit(f"shared CIFAR-10 model not found at {CIFAR_MODEL}")
    model = load_model(checkpoint=str(CIFAR_MODEL))
    cfg = data_config_of(model)
    test = open_dataset(CIFAR_DATA, "test", cfg)
    subset = first_subset(test, limit)  # class-balanced: the folder is sorted by class
    loader = make_loader(subset, batch_size=500, workers=2)
    xs, ys = zip(*loader)
    calib_set = random_subset(open_dataset(CIFAR_DATA, "train", cfg), calib_size, seed)
    calib = [x for x, _ in make_loader(calib_set, batch_size=64)]
    return model, calib, torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def logits_of(model, images: torch.Tensor, batch: int = 250) -> tuple[torch.Tensor, float]:
    """Logits over all images and the seconds the forward passes took."""
    model.eval()
    outs, seconds = [], 0.0
    for i in range(0, len(images), batch):
        t0 = time.perf_counter()
        outs.append(model(images[i:i + batch]))
        seconds += time.perf_counter() - t0
    return torch.cat(outs), seconds


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


def quantize(model, config, calib):
    t0 = time.perf_counter()
    qm = vitq.quantize(model, config, calib=calib, show_progress=False)
    return qm, time.perf_counter() - t0


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of docs/results.md."""
    RESULTS.parent.mkdir(exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else "# vitq results\n\nWritten by the scripts in `bench/`.\n"
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
