"""Supervised baseline and fine-tuning: the same encoder plus a linear layer, trained with labels.

Standard CIFAR augmentation (zero-pad 4, random crop, horizontal flip), SGD + Nesterov momentum,
warm-up then cosine decay, the same number of optimiser steps at every label fraction (capped by
``supervised.max_epochs`` passes over small subsets). The final model is scored; nothing is selected
on the test set: with ``--tune`` the learning rate, weight decay and steps are chosen per label fraction
on the validation split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probclr.config import Config
from probclr.data.augment import translate_flip
from probclr.data.fractions import label_subset
from probclr.data.sources import load_splits
from probclr.data.splits import ImageSet, Splits
from probclr.device import autocast, make_generator, resolve_device
from probclr.eval.labels import check_fractions_possible, evaluated_split, num_classes_of, split_sizes
from probclr.eval.results import ResultRow, save_results
from probclr.io import DamagedFileError, atomic_torch_save, atomic_write_json, read_json, safe_torch_load
from probclr.model.backbones import Encoder, build_encoder, channel_stats, resolve_stem
from probclr.model.whitening import first_layer_whitening
from probclr.probes.metrics import score
from probclr.provenance import provenance
from probclr.train.optim import lr_at, param_groups, set_lr


class Setting(NamedTuple):
    """What every supervised model of one run shares, computed once: the data and the encoder's inputs."""
    splits: Splits  # every split, decoded
    device: torch.device
    num_classes: int
    mean: Tensor  # (C,) channel statistics of the pretraining images
    std: Tensor  # (C,)
    whitening: Tensor | None  # (W0, C, 3, 3) model.convnet_whiten's frozen first layer (label-free), or None

    @classmethod
    def of(cls, cfg: Config, splits: Splits, device: torch.device) -> Setting:
        """The statistics and whitening from the pretraining images, as pretraining computes them."""
        mean, std = channel_stats(splits.pretrain.images)
        whitening = first_layer_whitening(cfg.model, splits.pretrain.images, splits.pretrain_rows, mean, std)
        return cls(splits, device, num_classes_of(splits), mean, std, whitening)


class Classifier(nn.Module):
    """An encoder with a linear classification layer on its representation."""
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
    """Class probabilities (N, C) of uint8 images, batch by batch, in eval mode."""
    out = [torch.softmax(model(c.to(device).float().div(255)).float(), dim=1).cpu() for c in images.split(batch_size)]
    return torch.cat(out)


def point_key(cfg: Config, split: str) -> str:
    """What a finished supervised point depends on: data, model, supervised settings, seed and split."""
    parts = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("data", "model", "supervised")}
    parts["data"].pop("data_dir", None)  # a moved dataset is the same dataset (its contents are cached by hash)
    parts["data"].pop("cache_dir", None)
    text = json.dumps({**parts, "seed": cfg.run.seed, "amp": cfg.run.amp, "split": split}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_and_score(
    cfg: Config, setting: Setting, evaluated: ImageSet, fraction: float, seed: int, keep: Path | None = None,
) -> ResultRow:
    """One supervised model from scratch on the seed's label subset, scored on ``evaluated``.

    ``keep``: where the trained weights are kept (a tuning point), and read back instead of retraining: the
    chosen grid point's seed-0 model is the final seed-0 model, scored on test only once it is chosen.
    """
    splits, device = setting.splits, setting.device
    idx = label_subset(splits.train.labels, fraction, seed)
    torch.manual_seed(cfg.run.seed + 1000 * seed)
    encoder = build_encoder(cfg.model, setting.mean, setting.std, setting.whitening)
    model = Classifier(encoder, setting.num_classes)
    if keep is not None and keep.is_file():
        model.load_state_dict(safe_torch_load(keep, "supervised model", "delete it to retrain"))
        model = model.to(device).eval()
    else:
        model = train_classifier(cfg, model, splits.train.images[idx], splits.train.labels[idx], seed, device)
        if keep is not None:
            atomic_torch_save(keep, model.state_dict())
    s = score(predict(model, evaluated.images, device), evaluated.labels)
    sup = cfg.supervised
    return ResultRow.of("supervised", "end-to-end", fraction, seed, int(idx.numel()), s,
                        f"lr={sup.lr:g}, wd={sup.weight_decay:g}, steps={sup.steps}")


def cached_point(path: Path, compute: Callable[[], ResultRow]) -> ResultRow:
    """A finished point read back (resume), else computed and written atomically."""
    if path.exists():
        try:
            return ResultRow(**read_json(path, "finished point"))
        except TypeError as err:
            raise DamagedFileError(f"finished point {str(path)!r} is damaged; delete it to recompute") from err
    row = compute()
    atomic_write_json(path, dataclasses.asdict(row))
    return row


def run_supervised(
    cfg: Config, out: Path, fractions: tuple[float, ...], seeds: int, command: list[str] | None = None,
    split: str = "test", tune: bool = False,
) -> tuple[list[ResultRow], Path]:
    """Train from scratch at each fraction and seed, scored on ``split``; with ``tune``, lr / weight decay /
    steps are first chosen per fraction on the validation split (``supervised.grid_*``, label subset 0).
    Resumable: finished points are read back, not retrained."""
    device = resolve_device(cfg.run)
    splits = load_splits(cfg.data)
    evaluated = evaluated_split(splits, split)
    check_fractions_possible(splits.train.labels, fractions)
    cfg = dataclasses.replace(cfg, model=resolve_stem(cfg.model, int(splits.train.images.shape[-1])))
    setting = Setting.of(cfg, splits, device)
    out, t0 = Path(out), time.perf_counter()
    rows: list[ResultRow] = []
    chosen: dict[str, dict[str, float]] = {}
    for fraction in fractions:
        fcfg = cfg
        if tune:
            fcfg, grid = tune_fraction(cfg, setting, fraction, out)
            chosen[f"{fraction:g}"] = grid
        for seed in range(seeds):
            point = out / "points" / f"fraction{fraction:g}_seed{seed}_{split}_{point_key(fcfg, split)}.json"
            keep = tuning_weights(out, fraction, fcfg) if tune and seed == 0 else None
            rows.append(cached_point(point, lambda f=fraction, s=seed, c=fcfg, k=keep: train_and_score(
                c, setting, evaluated, f, s, k)))
    meta = {
        "config": dataclasses.asdict(cfg), "provenance": provenance(device, command), "split": split,
        "split_sizes": split_sizes(splits), "tuned_on_val": chosen, "wall_s": time.perf_counter() - t0,
    }
    return rows, save_results(out, rows, meta)


def tuning_weights(out: Path, fraction: float, cfg: Config) -> Path:
    """Where the seed-0 model of a tuning grid point keeps its weights."""
    return out / "tuning" / f"fraction{fraction:g}_{point_key(cfg, 'val')}.pt"


def tune_fraction(cfg: Config, setting: Setting, fraction: float, out: Path) -> tuple[Config, dict[str, float]]:
    """The grid point with the best validation accuracy (then NLL) at ``fraction``; every point is kept."""
    sup = cfg.supervised
    best: tuple[tuple[float, float], Config, ResultRow] | None = None
    for lr, wd, steps in itertools.product(sup.grid_lr, sup.grid_weight_decay, sup.grid_steps):
        c = dataclasses.replace(cfg, supervised=dataclasses.replace(sup, lr=lr, weight_decay=wd, steps=steps))
        point = out / "tuning" / f"fraction{fraction:g}_{point_key(c, 'val')}.json"
        row = cached_point(point, lambda c=c: train_and_score(
            c, setting, evaluated_split(setting.splits, "val"), fraction, 0, tuning_weights(out, fraction, c)))
        key = (row.accuracy, -row.nll)
        if best is None or key > best[0]:
            best = (key, c, row)
    assert best is not None
    s = best[1].supervised
    return best[1], {"lr": s.lr, "weight_decay": s.weight_decay, "steps": s.steps, "val_accuracy": best[2].accuracy}
