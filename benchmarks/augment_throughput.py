"""Two-view SimCLR augmentation throughput on one CPU thread: probclr's batched generator vs the
per-image torchvision/PIL pipeline that peer implementations run in DataLoader workers.

    python benchmarks/augment_throughput.py [--images 2048] [--batch 512] [--repeats 3] [--out FILE]

Both pipelines get the same uint8 CIFAR-10 images (real ones when PROBCLR_DATA_DIR holds cifar10-jpeg,
else the embedded digits upsampled to 32x32), in the same process, alternating, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F
from PIL import Image

from probclr.config import AugmentConfig, DataConfig
from probclr.data.augment import SimCLRAugment
from probclr.data.sources import load_splits
from studies.bench import peer_transform


def load_images(n: int) -> tuple[torch.Tensor, str]:
    try:
        s = load_splits(DataConfig(dataset="cifar10", train_limit=n))
        return s.train.images, "cifar10 (JPEG copies)"
    except Exception:  # noqa: BLE001 - fall back to the embedded set
        x = load_splits(DataConfig()).train.images[:n].float()
        return F.interpolate(x, size=(32, 32), mode="bilinear").round().to(torch.uint8), "digits upsampled"


def time_pil(images: torch.Tensor) -> float:
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]  # decoded once, as a cached dataset
    tf = peer_transform(32)
    t0 = time.perf_counter()
    for im in pil:
        tf(im), tf(im)  # two views per image
    return len(pil) / (time.perf_counter() - t0)


def time_batched(images: torch.Tensor, batch: int, color_mode: str) -> float:
    aug = SimCLRAugment(AugmentConfig(color_mode=color_mode))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    aug(images[:batch], gen)  # warm-up
    t0 = time.perf_counter()
    for chunk in images.split(batch):
        aug(chunk, gen), aug(chunk, gen)
    return images.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    images, source = load_images(a.images)
    pil, hsv, affine = [], [], []
    for _ in range(a.repeats):
        pil.append(time_pil(images))
        hsv.append(time_batched(images, a.batch, "hsv"))
        affine.append(time_batched(images, a.batch, "affine"))
    result = {
        "benchmark": "two-view augmentation throughput, 1 CPU thread", "images": images.shape[0], "source": source,
        "batch": a.batch, "pil_images_per_s": max(pil), "probclr_hsv_images_per_s": max(hsv),
        "probclr_affine_images_per_s": max(affine), "ratio_hsv": max(hsv) / max(pil),
        "ratio_affine": max(affine) / max(pil), "all_pil": pil, "all_hsv": hsv, "all_affine": affine,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
