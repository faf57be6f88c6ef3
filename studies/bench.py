"""`probclr bench`: where pretraining time goes, measured in one run on the current device.

(a) augmentation alone (two views, batched on the device); (b) the model step alone on pre-made views --
the ceiling; (c) the full pretraining step (augmentation + model step); (d) the same model step fed by the
peer recipe: a per-image torchvision/PIL pipeline in DataLoader workers. Images/s of each, and ratios.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probclr.config import Config
from probclr.data.augment import SimCLRAugment
from probclr.data.sources import load_splits
from probclr.device import bf16_native, make_generator, resolve_device
from probclr.model.backbones import channel_stats
from probclr.model.build import build_model
from probclr.train.optim import build_optimizer
from probclr.train.step import StepModel, train_step, two_views


def peer_transform(size: int, strength: float = 0.5) -> Callable[[Any], Tensor]:
    """The per-image torchvision/PIL SimCLR view that peer implementations run in DataLoader workers."""
    from torchvision import transforms as T

    s = strength
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8), T.RandomGrayscale(0.2),
        T.ToTensor(),
    ])


class _PILPairs(torch.utils.data.Dataset):
    """uint8 images -> two independently augmented views per image, one image at a time (the peer recipe)."""

    def __init__(self, images: Tensor, size: int, strength: float) -> None:
        self.images = images
        self.tf = peer_transform(size, strength)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        im = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return self.tf(im), self.tf(im)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[int], None], steps: int, warmup: int, batch: int, device: torch.device) -> float:
    for i in range(warmup):
        fn(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        fn(warmup + i)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def run_bench(cfg: Config, steps: int = 20, warmup: int = 3, workers: int = 2) -> dict[str, Any]:
    """Time the training step (full pipeline and a peer-style DataLoader pipeline) on the configured device."""
    device = resolve_device(cfg.run)
    b = cfg.optim.batch_size
    images_cpu = load_splits(cfg.data).pretrain.images
    n_need = (steps + warmup) * b
    images_cpu = images_cpu[: max(b, min(images_cpu.shape[0], n_need))]
    images = images_cpu.to(device)
    mean, std = channel_stats(images_cpu)
    model = build_model(cfg, mean, std).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(model, cfg.optim)
    aug = SimCLRAugment(cfg.augment)
    gen = make_generator(device, cfg.run.seed)
    n = images.shape[0]

    def batch_at(i: int) -> Tensor:
        start = (i * b) % max(1, n - b + 1)
        return images[start:start + b]

    stepper = StepModel(model, model, cfg, device)

    def model_step(views: Tensor) -> None:
        train_step(stepper, views, opt)  # the training step of `probclr pretrain`, then the update
        opt.step()

    fixed = two_views(aug, batch_at(0), gen)
    aug_rate = _rate(lambda i: (aug(batch_at(i), gen), aug(batch_at(i), gen)) and None, steps, warmup, b, device)
    ceiling = _rate(lambda i: model_step(fixed), steps, warmup, b, device)
    full = _rate(lambda i: model_step(two_views(aug, batch_at(i), gen)), steps, warmup, b, device)
    loader = torch.utils.data.DataLoader(
        _PILPairs(images_cpu, fixed.shape[-1], cfg.augment.strength), batch_size=b, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    it = iter(loader)

    def peer_step(i: int) -> None:
        nonlocal it
        try:
            a, c = next(it)
        except StopIteration:
            it = iter(loader)
            a, c = next(it)
        model_step(torch.cat([a, c]).to(device, non_blocking=True))

    peer = _rate(peer_step, steps, warmup, b, device)
    return {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "date": time.strftime("%Y-%m-%d"), "backbone": cfg.model.backbone, "batch_size": b,
        "image_size": int(fixed.shape[-1]), "bf16": bool(cfg.run.amp and bf16_native(device)),
        "channels_last": cfg.run.channels_last, "color_mode": cfg.augment.color_mode, "loss": cfg.loss.name,
        "steps": steps, "warmup": warmup, "loader_workers": workers,
        "images_per_s": {"augment": aug_rate, "model_ceiling": ceiling, "full_step": full, "peer_dataloader": peer},
        "ratios": {"full_vs_ceiling": full / ceiling, "full_vs_peer": full / peer},
    }
