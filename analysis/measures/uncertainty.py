"""How well a certainty score predicts errors and tracks ambiguity: AUROC, risk-coverage / AURC, Spearman.

Convention: a *certainty* score is larger when the model is more sure (kappa, max-softmax, -entropy).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats
from torch import Tensor


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)


def auroc(scores: Tensor | np.ndarray, positive: Tensor | np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U / (n+ n-)).

    For misclassification detection pass ``scores = -certainty`` and ``positive = is_error``.
    """
    s, y = _np(scores), _np(positive).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_or_nan(scores: Tensor | np.ndarray, positive: Tensor | np.ndarray) -> float:
    """:func:`auroc`, or NaN where it is undefined (no positive or no negative: every image right, or every
    one wrong, as on a handful of images); an analysis records it as missing instead of failing."""
    y = _np(positive).astype(bool)
    return auroc(scores, y) if 0 < int(y.sum()) < y.size else float("nan")


class RiskCoverage(NamedTuple):
    """The risk-coverage curve of a certainty score and its area (AURC)."""
    coverage: np.ndarray  # (N,) fraction of samples kept, most certain first
    risk: np.ndarray  # (N,) error rate among the kept samples
    aurc: float  # mean risk over coverages 1/N..1 (Geifman et al. 2019); lower is better


def risk_coverage(certainty: Tensor | np.ndarray, error: Tensor | np.ndarray) -> RiskCoverage:
    """Keep the k most certain samples for k = 1..N; ties broken by a stable sort (order of input)."""
    c, e = _np(certainty), _np(error)
    order = np.argsort(-c, kind="stable")
    cum_err = np.cumsum(e[order])
    k = np.arange(1, len(c) + 1)
    risk = cum_err / k
    return RiskCoverage(k / len(c), risk, float(risk.mean()))


class Correlation(NamedTuple):
    """Spearman's rho with a 95 % bootstrap interval and the number of items."""
    rho: float  # Spearman rank correlation
    low: float  # 95 % bootstrap percentile interval
    high: float
    n: int  # number of (score, target) pairs


def spearman_ci(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, groups: Tensor | np.ndarray | None = None,
    boots: int = 200, seed: int = 0,
) -> Correlation:
    """Spearman's rho of x and y with a 95 % bootstrap interval (all NaN on fewer than 3 pairs: undefined).

    ``groups`` (e.g. the image index when each image appears at several severities) makes it a cluster
    bootstrap: whole groups are resampled, since pairs within a group are not independent.
    """
    a, b = _np(x), _np(y)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) < 3:  # undefined on fewer than 3 pairs: missing in the tables, not a failed analysis
        return Correlation(float("nan"), float("nan"), float("nan"), len(a))
    rho = float(stats.spearmanr(a, b).statistic)
    rng = np.random.default_rng(seed)
    if groups is None:
        idx_all = rng.integers(0, len(a), (boots, len(a)))
    else:
        g = _np(groups).astype(np.int64)
        uniq, inv = np.unique(g, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        counts = np.bincount(inv)
        if not (counts == counts[0]).all():
            raise ValueError("cluster bootstrap needs groups of equal size")
        by_group = order.reshape(len(uniq), counts[0])  # (G, m) indices per group
        chosen = rng.integers(0, len(uniq), (boots, len(uniq)))
        idx_all = by_group[chosen].reshape(boots, -1)
    reps = np.empty(boots)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of constant ranks is NaN, skipped below
        for r in range(boots):
            idx = idx_all[r]
            reps[r] = np.corrcoef(stats.rankdata(a[idx]), stats.rankdata(b[idx]))[0, 1]
    low, high = np.nanpercentile(reps, [2.5, 97.5])
    return Correlation(rho, float(low), float(high), len(a))


def entropy(probs: Tensor) -> Tensor:
    """(N, C) -> (N,) predictive entropy in nats."""
    p = probs.double().clamp_min(1e-12)
    return -(p * p.log()).sum(dim=1)


def misclassification_auroc(certainty: Tensor, probs: Tensor, labels: Tensor) -> float:
    """AUROC of *low* certainty for detecting the probe's errors (0.5 = chance, 1 = oracle)."""
    error = probs.argmax(dim=1).cpu() != labels.cpu()
    return auroc(-certainty.double().cpu(), error)


def baseline_certainties(probs: Tensor) -> dict[str, Tensor]:
    """Certainty scores every probe has: max-softmax and negative entropy."""
    return {"max_softmax": probs.max(dim=1).values.double(), "neg_entropy": -entropy(probs)}


__all__ = ["auroc", "risk_coverage", "spearman_ci", "entropy", "misclassification_auroc", "baseline_certainties",
           "RiskCoverage", "Correlation"]


def partial_spearman(x: Tensor | np.ndarray, y: Tensor | np.ndarray, z: Tensor | np.ndarray) -> float:
    """Spearman's rho of x and y with z partialled out: the rank correlation x keeps once z is known.
    NaN when x or y is a monotone function of z (nothing is left to correlate: the implicit head's kappa
    given the projection norm it is made of)."""
    rx, ry, rz = (stats.rankdata(_np(v)) for v in (x, y, z))
    r_xy, r_xz, r_yz = (float(np.corrcoef(a, b)[0, 1]) for a, b in ((rx, ry), (rx, rz), (ry, rz)))
    if min(1 - r_xz**2, 1 - r_yz**2) < 1e-6:  # |r| > 0.9999995: determined by z up to rounding and ties
        return float("nan")
    return (r_xy - r_xz * r_yz) / float(np.sqrt((1 - r_xz**2) * (1 - r_yz**2)))
