"""Positive pairs drawn from soft labels (``data.pairs: soft_labels``), with label-aware negatives.

SimCLR's positive of an image is a second augmentation of it. When the data come with a distribution over
classes per image (several annotators, a known mixing process), the positive can instead come from that
ambiguous generative process, as in Kirchhof, Kasneci & Oh (ICML 2023, the CIFAR-10H experiment): for an
anchor i with soft label p_i, draw a class c ~ p_i, then a partner j with probability proportional to
p_j(c). An ambiguous anchor then has partners of several classes, and a likelihood that models the
embedding's uncertainty (``--new-loss``) has a reason to lower its concentration.

The other views of the batch are the negatives, weighted by the probability that they belong to another
class than the anchor: w_ik = 1 - p_i . p_k (the official code draws negatives with this probability; the
in-batch denominator here takes its expectation). A candidate that is surely of the anchor's class
(w = 0) is not a negative at all. The positive keeps weight 1.

Every draw comes from a generator seeded by (run seed, epoch, step), so a resumed epoch draws exactly the
partners the uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from probclr.device import make_generator
from probclr.errors import DataError

ROW_SUM_TOLERANCE = 1e-3  # a row of probabilities must sum to 1 within this (then it is renormalised)


class SoftLabelPairs(NamedTuple):
    """The soft labels of the N pretraining images (canonical order) and what drawing partners needs."""

    probs: Tensor  # (N, C) float32 rows summing to 1, on the training device
    cdf: Tensor  # (C, N) float64 cumulative sums of each class column: partners of class c by inverse CDF
    sha256: str  # of the file's bytes: recorded with the run, checked on resume

    @staticmethod
    def load(path: str | Path, n: int, device: torch.device) -> SoftLabelPairs:
        """Read ``path`` (.npy, (n, C) probabilities, one row per pretraining image in canonical order)."""
        probs, digest = read_soft_labels(Path(path), n)
        cdf = torch.cumsum(probs.double().T, dim=1)  # (C, N)
        return SoftLabelPairs(probs.to(device), cdf.to(device), digest)

    def partners(self, anchors: Tensor, gen: torch.Generator) -> Tensor:
        """A partner for each anchor: a class c ~ p_anchor, then j ~ p_j(c) / sum_k p_k(c). (B,) -> (B,)."""
        c = torch.multinomial(self.probs[anchors], 1, generator=gen).squeeze(1)  # (B,) classes
        u = torch.rand(anchors.shape[0], generator=gen, device=self.cdf.device, dtype=self.cdf.dtype)  # (B,)
        u = u * self.cdf[c, -1]  # (B,) a point of class c's total mass
        j = torch.empty_like(c)
        for k in torch.unique(c).tolist():  # one 1-D search per class present: no (B, N) copy of the table
            at = c == k
            j[at] = torch.searchsorted(self.cdf[k], u[at], right=True)  # first image whose cumulative mass > u
        return j.clamp_(max=self.cdf.shape[1] - 1)

    def negative_log_weights(self, anchors: Tensor, partners: Tensor) -> Tensor:
        """log w for every pair of the 2B views (anchors, then partners): w = 1 - p_i . p_k, the probability
        of another class; 0 on the positive pairs (weight 1); -inf where a candidate is surely of the anchor's
        class. (B,), (B,) -> (2B, 2B) float32."""
        p = self.probs[torch.cat([anchors, partners])]  # (2B, C)
        w = (1 - p @ p.T).clamp_(min=0.0)  # (2B, 2B)
        b = anchors.shape[0]
        pos = torch.arange(2 * b, device=w.device)
        w[pos, pos.roll(b)] = 1.0  # view i and its partner i + B
        return w.log()


def pair_generator(device: torch.device, seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one step's partners: a function of (seed, epoch, step) alone."""
    return make_generator(device, ((seed % 2**31) * 1_000_003 + epoch) * 1_000_033 + step)


def read_soft_labels(path: Path, n: int) -> tuple[Tensor, str]:
    """The (n, C) float32 soft labels in ``path`` and the sha256 of its bytes; one-line errors otherwise."""
    if not path.is_file():
        raise DataError(f"data.soft_labels {str(path)!r} is not a file; give a .npy of (N, C) class probabilities")
    data = path.read_bytes()
    try:
        import io

        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"data.soft_labels {str(path)!r} is not a readable .npy array: {str(err)[:120]}") from err
    _check_probs(arr, path, n)
    probs = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    probs = probs / probs.sum(dim=1, keepdim=True)  # (n, C)
    return probs.float(), hashlib.sha256(data).hexdigest()


def _check_probs(arr: np.ndarray, path: Path, n: int) -> None:
    where = f"data.soft_labels {str(path)!r}"
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{where} must be a numeric (N, C) array with C >= 2 classes, got {arr.dtype} {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{where} has {arr.shape[0]} rows but there are {n} pretraining images;"
                        " give one row per training image, in the folder's sorted order")
    values = arr.astype(np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        bad = int(np.argwhere(~np.isfinite(values) | (values < 0))[0, 0])
        raise DataError(f"{where} row {bad} holds a negative or non-finite value; probabilities are >= 0")
    off = np.abs(values.sum(axis=1) - 1)
    if (off > ROW_SUM_TOLERANCE).any():
        bad = int(np.argmax(off))
        raise DataError(f"{where} row {bad} sums to {values[bad].sum():.4g}; each row must sum to 1")
