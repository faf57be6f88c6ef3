"""Per-image ambiguity statistics: does each image's own certainty fall as that image is made more
ambiguous? Pooled correlations can be carried by differences between images; these cannot."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from torch import Tensor


def less_certain_rate(altered: Tensor, clean: Tensor) -> float:
    """Share of images whose certainty on the altered view is below that on the clean image; a tie counts
    one half (a score that does not react scores 0.5, not 0)."""
    a, c = altered.double().numpy(), clean.double().numpy()
    return float(np.mean((a < c) + 0.5 * (a == c)))


def per_image_spearman(levels: Tensor) -> np.ndarray:
    """levels: (L, N) certainty of N images at L increasing severities -> (N,) Spearman's rho of each
    image's certainty with the severity (average ranks for ties; nan for an image whose certainty is
    constant)."""
    s = rankdata(levels.double().numpy(), axis=0)  # (L, N), ranks over severities
    sev = np.arange(1, levels.shape[0] + 1, dtype=np.float64)[:, None]  # (L, 1)
    sc, vc = s - s.mean(0), sev - sev.mean()  # (L, N), (L, 1)
    denom = np.sqrt((sc ** 2).sum(0) * (vc ** 2).sum())  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sc * vc).sum(0) / denom
