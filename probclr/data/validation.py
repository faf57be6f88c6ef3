"""The validation split: labeled training images held out of the label pool, for every choice.

Every hyper-parameter, pilot and "best" is chosen on these images; the test set is read only for the
numbers finally reported. Self-supervised pretraining still sees them, without labels (``Splits.pretrain``
keeps the whole training set); label fractions, probes and the supervised baseline never do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probclr.config import DataConfig
from probclr.data.splits import ImageSet, Splits
from probclr.errors import ConfigError

CIFAR10_VAL_SIZE = 5000  # as is customary on CIFAR-10 (45,000 / 5,000)


def resolve_val_size(cfg: DataConfig, n_labeled: int) -> int:
    """``data.val_size``, or its default: 5,000 on CIFAR-10, 10 % of the labeled training set otherwise."""
    if cfg.val_size is not None:
        return cfg.val_size
    if cfg.dataset == "cifar10" and n_labeled >= 10 * CIFAR10_VAL_SIZE:
        return CIFAR10_VAL_SIZE
    return n_labeled // 10


def _per_class(counts: Tensor, size: int) -> Tensor:
    """Stratified allocation of ``size`` over classes with ``counts`` (C,): largest remainders, sums to size."""
    exact = counts.double() * size / counts.sum()  # (C,)
    k = exact.floor().long()  # (C,)
    rest = size - int(k.sum())
    if rest > 0:
        k[torch.argsort(exact - k, descending=True, stable=True)[:rest]] += 1
    return k


def validation_indices(labels: Tensor, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions of the labeled images (labels (N,) >= 0) into (pool, val): stratified, seeded.

    ``val`` holds ``size`` images with class shares as in ``labels``; every class keeps at least one image
    in the pool. Both index tensors are sorted.
    """
    labeled = torch.nonzero(labels >= 0).squeeze(1)  # (L,)
    classes, counts = torch.unique(labels[labeled], return_counts=True)
    if size < 0 or size >= labeled.numel():
        raise ConfigError(f"data.val_size must be in [0, {labeled.numel() - 1}] for {labeled.numel()} labeled"
                          f" training images, got {size}")
    take = _per_class(counts, size)
    gen = torch.Generator().manual_seed(104_729 * seed + 11)
    val = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = labeled[labels[labeled] == c]  # (n_c,)
        if k >= idx.numel():
            raise ConfigError(f"data.val_size={size} would leave class {c} with no labeled training image;"
                              f" use a smaller data.val_size (at most {labeled.numel() - counts.numel()})")
        val.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    val_idx = torch.sort(torch.cat(val)).values if val else labeled[:0]
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).squeeze(1), val_idx


def _subset(part: ImageSet, idx: Tensor) -> ImageSet:
    return ImageSet(part.images[idx], part.labels[idx], part.classes)


def hold_out_validation(s: Splits, cfg: DataConfig) -> Splits:
    """Carve the validation split out of ``s.train`` (the label pool); pretraining keeps every image."""
    n_labeled = int((s.train.labels >= 0).sum())
    if n_labeled == 0:
        return s._replace(val=_subset(s.train, s.train.labels[:0]))
    size = resolve_val_size(cfg, n_labeled)
    if size == 0:
        return s._replace(val=_subset(s.train, s.train.labels[:0]))
    pool_idx, val_idx = validation_indices(s.train.labels, size, cfg.val_seed)
    pool, val = _subset(s.train, pool_idx), _subset(s.train, val_idx)
    return Splits(pretrain=s.pretrain, train=pool, test=s.test, val=val)


def val_fraction_note(n_pool: int, n_val: int) -> str:
    """One phrase for results: how the label pool and the validation split were formed."""
    share = 100 * n_val / max(1, n_pool + n_val)
    return f"label pool {n_pool}, validation {n_val} ({share:.{0 if math.isclose(share, round(share)) else 1}f} %)"
