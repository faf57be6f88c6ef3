"""CIFAR-10H human soft labels (Peterson et al., ICCV 2019) and their alignment to a test set.

The CIFAR-10H rows follow the ORIGINAL CIFAR-10 test order. An alignment to the test set a run was
evaluated on is accepted only when it can be verified; otherwise the analysis refuses to run:
- the run read CIFAR-10 from torchvision's python batches (``cifar-10-batches-py``), whose test batch is the
  original order, so row i is test image i -- and the human majority label must agree with the test label
  on at least 99 % of rows (it disagrees on a few dozen ambiguous images);
- or the user gives an explicit alignment file (a .npy of 10,000 ints: for each test image, its CIFAR-10H
  row), which must be a permutation and pass the same agreement check.
A test set read from per-class image folders (e.g. the JPEG copies) has no recoverable original order and
agreement of labels alone cannot verify the order within a class, so it is refused without such a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from probclr.errors import ProbclrError

ROWS, CLASSES = 10000, 10
MIN_AGREEMENT = 0.99


def load_cifar10h(path: str | Path) -> Tensor:
    """(10000, 10) float64 per-image human label distribution, validated."""
    p = Path(path)
    if not p.is_file():
        raise ProbclrError(f"CIFAR-10H file {str(p)!r} does not exist (expected cifar10h-probs.npy)")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ProbclrError(f"CIFAR-10H file {str(p)!r} is not a .npy array: {str(err)[:200]}") from err
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        kind = type(arr).__name__ if not isinstance(arr, np.ndarray) else f"array of {arr.dtype}"
        raise ProbclrError(f"CIFAR-10H file {str(p)!r} must be one numeric .npy array (10000, 10), got {kind}")
    if arr.shape != (ROWS, CLASSES):
        raise ProbclrError(f"CIFAR-10H file {str(p)!r} has shape {arr.shape}, expected ({ROWS}, {CLASSES})")
    if not np.isfinite(arr).all() or (arr < 0).any() or not np.allclose(arr.sum(1), 1, atol=1e-6):
        raise ProbclrError(f"CIFAR-10H file {str(p)!r}: rows must be probability vectors (>= 0, summing to 1)")
    return torch.from_numpy(arr.astype(np.float64))


def human_entropy(probs: Tensor) -> Tensor:
    """Entropy (nats) of each image's human soft label: (N, C) probabilities -> (N,)."""
    p = probs.clamp_min(1e-12)
    return -(probs * p.log()).sum(dim=1)


def align(human: Tensor, test_labels: Tensor, original_order: bool, order_file: str | Path | None) -> Tensor:
    """Human label rows reordered to the test set's order, after verification (else a ProbclrError)."""
    if test_labels.numel() != ROWS:
        raise ProbclrError(f"the run's test set has {test_labels.numel()} images, CIFAR-10H covers {ROWS}")
    if order_file is not None:
        try:
            raw = np.load(Path(order_file), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ProbclrError(f"alignment file {str(order_file)!r} is not a .npy array: {str(err)[:200]}") from err
        if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "iu":
            raise ProbclrError(f"alignment file {str(order_file)!r} must be one integer .npy array of {ROWS} rows")
        order = torch.from_numpy(raw).long()
        if order.shape != (ROWS,) or not torch.equal(order.sort().values, torch.arange(ROWS)):
            raise ProbclrError(f"alignment file {str(order_file)!r} must hold a permutation of 0..{ROWS - 1}")
        source = f"alignment file {str(order_file)!r}"
    elif original_order:
        order, source = torch.arange(ROWS), "the original CIFAR-10 test order (python batches)"
    else:
        raise ProbclrError(
            "cannot verify how CIFAR-10H rows align with this test set: it was read from image folders, whose"
            " original CIFAR-10 order is unknown; use cifar-10-batches-py or pass --cifar10h-order FILE.npy"
        )
    aligned = human[order]
    agreement = float((aligned.argmax(dim=1) == test_labels).double().mean())
    if agreement < MIN_AGREEMENT:
        raise ProbclrError(
            f"CIFAR-10H alignment by {source} fails verification: the human majority label matches the test label"
            f" on {100 * agreement:.1f} % of images, expected >= {100 * MIN_AGREEMENT:.0f} %"
        )
    return aligned
