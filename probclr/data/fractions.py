"""Label-fraction subsets: class-stratified, seeded and nested (the 1% subset lies inside the 10% one)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probclr.errors import ProbclrError


def check_fraction(fraction: float) -> None:
    """Refuse a label fraction outside (0, 1] with a one-line error."""
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise ProbclrError(f"fraction must be in (0, 1], got {fraction}")


def label_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a stratified ``fraction`` of ``labels`` (N,): ceil(fraction * n_c) of each class c.

    Each class is shuffled once per seed and its first images are taken, so for one seed a smaller
    fraction's subset is a prefix (hence a subset) of a larger one's. Every class keeps >= 1 label.
    """
    check_fraction(fraction)
    labels = labels.cpu()
    if labels.numel() == 0 or bool((labels < 0).all()):
        raise ProbclrError("the training set has no labels to draw a fraction from")
    gen = torch.Generator().manual_seed(10_007 * seed + 17)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        idx = torch.nonzero(labels == c).squeeze(1)  # (n_c,)
        order = idx[torch.randperm(idx.numel(), generator=gen)]
        # round away float noise before the ceiling: 0.1 * 5000 must give 500, not 501
        k = max(1, math.ceil(round(fraction * idx.numel(), 6)))
        chosen.append(order[:k])
    return torch.sort(torch.cat(chosen)).values


def holdout_split(labels: Tensor, share: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions 0..N-1 of a labeled subset into (fit, holdout), stratified; classes with a single
    example stay in ``fit``. Used to choose hyper-parameters without ever touching the test set."""
    gen = torch.Generator().manual_seed(7919 * seed + 3)
    fit, hold = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(math.floor(share * idx.numel())) if idx.numel() >= 2 else 0
        hold.append(idx[:k])
        fit.append(idx[k:])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(hold)).values
