"""Train the embedded default model: a small timm ViT on Fashion-MNIST (real data, CPU, a few minutes).

Writes ``src/vitq/assets/fmnist_vit_tiny.safetensors`` (fp16) and ``.json`` in the same format as the shared CIFAR
model, so that ``vitq quantize`` runs on a fresh machine with no network. Reproducible: fixed seed, and the test
accuracy printed at the end is that of the stored fp16 weights.

    python scripts/train_default.py [--epochs 8] [--data /usr/share/datasets/fashion-mnist]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vitq.data import FashionMNIST
from vitq.models import ASSETS, DEFAULT_DATA, build_vit_from_cfg

CFG = {"img_size": 28, "patch_size": 4, "in_chans": 1, "num_classes": 10, "embed_dim": 96, "depth": 6,
       "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True}


def as_tensor(ds: FashionMNIST) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(ds.images.copy()).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    return x, torch.from_numpy(ds.targets.copy())


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 2-pixel shifts and horizontal flips, batched."""
    b = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
    x = padded[:, :, dy:dy + 28, dx:dx + 28]
    flip = torch.rand(b, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def accuracy(model, x, y, mean, std, bs=1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            correct += (model((x[i:i + bs] - mean) / std).argmax(-1) == y[i:i + bs]).sum().item()
    return 100.0 * correct / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(ASSETS / "fmnist_vit_tiny"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    xtr, ytr = as_tensor(FashionMNIST(Path(args.data), "train"))
    xte, yte = as_tensor(FashionMNIST(Path(args.data), "test"))
    mean, std = xtr.mean().item(), xtr.std().item()
    model = build_vit_from_cfg(CFG)
    bs = 128
    steps = args.epochs * math.ceil(len(xtr) / bs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), bs):
            idx = perm[i:i + bs]
            xb = (augment(xtr[idx], g) - mean) / std
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} "
              f"test {accuracy(model, xte, yte, mean, std):.2f}% ({time.time() - t0:.0f}s)", flush=True)

    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    out = Path(args.out)
    save_file(sd, str(out.with_suffix(".safetensors")))
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    top1 = accuracy(model, xte, yte, mean, std)
    meta = {"cfg": {**CFG, "mean": [mean], "std": [std]}, "test_top1_fp32": round(top1, 2),
            "epochs": args.epochs, "train_seconds": round(time.time() - t0), "seed": args.seed,
            "params": sum(p.numel() for p in model.parameters()), "data": "Fashion-MNIST"}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"stored fp16 weights: test top-1 {top1:.2f}% -> {out}.safetensors")


if __name__ == "__main__":
    main()
