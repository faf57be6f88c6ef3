"""Supervised baseline and fine-tuning: the same encoder plus a linear layer, trained with labels.

Standard CIFAR augmentation (zero-pad 4, random crop, horizontal flip), SGD + Nesterov momentum,
warm-up then cosine decay, the same number of optimiser steps at every label fraction (capped by
``supervised.max_epochs`` passes over small subsets). The final model is scored; nothing is selected
on the test set.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probclr.augment import translate_flip
from probclr.backbones import Encoder, build_encoder, channel_stats
from probclr.config import Config
from probclr.datasets import load_splits
from probclr.device import autocast, make_generator, resolve_device
from probclr.evaluate import check_fractions_possible, num_classes_of
from probclr.fractions import label_subset
from probclr.io import atomic_write_json
from probclr.metrics import score
from probclr.optim import lr_at, param_groups, set_lr
from probclr.provenance import provenance
from probclr.results import ResultRow, save_results


class Classifier(nn.Module):
    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(encoder.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.encoder(x))  # (B, C)


def train_classifier(
    cfg: Config, model: Classifier, images: Tensor, labels: Tensor, seed: int, device: torch.device,
    encoder_lr_scale: float = 1.0,
) -> Classifier:
    """Train ``model`` on uint8 ``images`` (N, C, H, W) with ``labels`` (N,) for the configured steps."""
    s = cfg.supervised
    n = images.shape[0]
    bs = max(2, min(s.batch_size, n))
    steps = min(s.steps, s.max_epochs * math.ceil(n / bs))
    model = model.to(device).to(memory_format=torch.channels_last)
    groups = param_groups(model.encoder, s.weight_decay, lr_scale=encoder_lr_scale) + param_groups(model.fc, s.weight_decay)
    opt = torch.optim.SGD(groups, lr=0.0, momentum=0.9, nesterov=True)
    base = s.lr * bs / 256
    warmup = min(100, steps // 10)
    gen = make_generator(device, seed)
    x_all, y_all = images.to(device), labels.to(device)
    model.train()
    perm, pos = torch.randperm(n, generator=gen, device=device), 0
    for step in range(steps):
        set_lr(opt, lr_at(step, steps, warmup, base))
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen, device=device), 0
        idx = perm[pos : pos + bs]
        pos += bs
        x = translate_flip(x_all[idx].float().div(255), s.pad, gen).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.run.amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    out = [torch.softmax(model(c.to(device).float().div(255)).float(), dim=1).cpu() for c in images.split(batch_size)]
    return torch.cat(out)


def run_supervised(
    cfg: Config, out: Path, fractions: tuple[float, ...], seeds: int, command: list[str] | None = None,
) -> tuple[list[ResultRow], Path]:
    """Train from scratch at each fraction and seed; resumable: finished points are read back, not retrained."""
    device = resolve_device(cfg.run)
    splits = load_splits(cfg.data)
    num_classes = num_classes_of(splits)
    check_fractions_possible(splits.train.labels, fractions)
    mean, std = channel_stats(splits.pretrain.images)
    out = Path(out)
    t0 = time.perf_counter()
    rows: list[ResultRow] = []
    for fraction in fractions:
        for seed in range(seeds):
            point = out / "points" / f"fraction{fraction:g}_seed{seed}.json"
            if point.exists():
                rows.append(ResultRow(**json.loads(point.read_text())))
                continue
            idx = label_subset(splits.train.labels, fraction, seed)
            torch.manual_seed(cfg.run.seed + 1000 * seed)
            model = Classifier(build_encoder(cfg.model, mean, std), num_classes)
            model = train_classifier(cfg, model, splits.train.images[idx], splits.train.labels[idx], seed, device)
            s = score(predict(model, splits.test.images, device), splits.test.labels)
            row = ResultRow.of("supervised", "end-to-end", fraction, seed, int(idx.numel()), s)
            atomic_write_json(point, dataclasses.asdict(row))
            rows.append(row)
    meta = {
        "config": dataclasses.asdict(cfg), "provenance": provenance(device, command),
        "wall_s": time.perf_counter() - t0,
    }
    return rows, save_results(out, rows, meta)
