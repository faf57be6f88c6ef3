"""Images as uint8 tensors with labels, and the splits of a dataset: pretraining, the labeled pool, validation, test."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from torch import Tensor

if TYPE_CHECKING:
    from probclr.data.encoded import EncodedImages


class ImageSet(NamedTuple):
    """Images as uint8 (N, C, H, W) with int64 labels (-1 = unlabeled) and class names."""
    # (N, C, H, W) uint8; packed encoded files with data.residency encoded (indexing and split() decode)
    images: Tensor | EncodedImages
    labels: Tensor  # (N,) int64; -1 where unlabeled
    classes: tuple[str, ...]


class Splits(NamedTuple):
    """A dataset's parts: pretraining images, the labeled pool, the test set and the validation split."""
    pretrain: ImageSet  # what self-supervised pretraining sees (labels unused)
    train: ImageSet  # the labeled training set that label fractions are drawn from
    test: ImageSet  # held-out evaluation set, never used for fitting or model selection
    # labeled images held out of the label pool for every choice (probclr.validation); None before carving
    val: ImageSet | None = None
    # (N,) int64: the stored row of each pretraining image in canonical order (the training images in folder
    # order after the limit), where the store keeps another order (a folder's cache entry: label pool, then
    # validation); None = stored in canonical order. Pretraining reads through it, so every residency trains
    # on the same sequence of images.
    pretrain_rows: Tensor | None = None
