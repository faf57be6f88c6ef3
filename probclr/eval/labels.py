"""Which labeled images an evaluation reads: the evaluated split, class count, split sizes, possible fractions."""

from __future__ import annotations

import torch

from probclr.data.fractions import check_fraction
from probclr.data.splits import ImageSet, Splits
from probclr.errors import ProbclrError

SPLITS = ("test", "val")


def evaluated_split(splits: Splits, split: str) -> ImageSet:
    """The images a command scores: the test set, or the validation split (then test is never read)."""
    if split not in SPLITS:
        raise ProbclrError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test":
        return splits.test
    if splits.val is None or splits.val.images.shape[0] == 0:
        raise ProbclrError("there is no validation split (data.val_size is 0 or the training set has no labels);"
                           " set data.val_size > 0 to evaluate with --split val")
    return splits.val


def num_classes_of(splits: Splits) -> int:
    """The number of classes of a dataset that has a labeled train split and a test split (else an error)."""
    if splits.test.images.shape[0] == 0 or splits.train.images.shape[0] == 0 or not splits.train.classes:
        raise ProbclrError("this dataset has no labeled train/test split to evaluate on (use train/ and test/ folders)")
    return len(splits.train.classes)


def check_fractions_possible(labels: torch.Tensor, fractions: tuple[float, ...]) -> None:
    """Refuse fractions that would leave a class without a single labeled image, and labels of fewer than two
    classes (any classifier scores 100 % on one class: a number that says nothing)."""
    for f in fractions:
        check_fraction(f)
    counts = torch.bincount(labels[labels >= 0])
    if int((counts > 0).sum()) < 2:
        raise ProbclrError(f"the labeled images hold {int((counts > 0).sum())} class; classification needs at least "
                           "2 (pretraining alone needs none)")
    if (counts == 0).any():
        raise ProbclrError(f"class {int(torch.nonzero(counts == 0)[0])} has no labeled training images")


def split_sizes(splits: Splits) -> dict[str, int]:
    """Image counts of every split (recorded beside results: the label pool excludes the validation split)."""
    val = 0 if splits.val is None else int(splits.val.images.shape[0])
    return {"pretrain": int(splits.pretrain.images.shape[0]), "label_pool": int(splits.train.images.shape[0]),
            "val": val, "test": int(splits.test.images.shape[0])}
