"""Per-image ambiguity statistics and the seed-level summary against references."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from analysis.measures.per_image import less_certain_rate, per_image_spearman
from analysis.measures.seed_summary import across_seeds, kappa_verdicts, lower_is_better, t_interval


def test_less_certain_rate_counts_ties_as_half():
    clean = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert less_certain_rate(torch.tensor([0.0, 1.0, 5.0, 4.0]), clean) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert less_certain_rate(clean, clean) == 0.5  # a score that does not react is chance, not failure


def test_per_image_spearman_matches_scipy_per_image():
    g = torch.Generator().manual_seed(0)
    levels = torch.randn(6, 40, generator=g).double()
    levels[:, 3] = torch.tensor([5.0, 4, 4, 2, 1, 0])  # ties
    levels[:, 4] = 1.0  # constant: undefined
    got = per_image_spearman(levels)
    for i in range(40):
        if i == 4:
            assert np.isnan(got[i])
            continue
        assert got[i] == pytest.approx(stats.spearmanr(levels[:, i].numpy(), np.arange(6))[0], abs=1e-12)


def test_t_interval_matches_scipy():
    v = np.array([0.2, 0.25, 0.31])
    m, lo, hi = t_interval(v)
    ref = stats.t.interval(0.95, 2, loc=v.mean(), scale=stats.sem(v))
    assert m == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(ref)
    assert np.isnan(t_interval(np.array([0.3]))[1])


def _measures(kappa, norm):
    return pd.DataFrame({"measure": ["R-AUROC", "R-AUROC", "Spearman with contrast", "Spearman with contrast"],
                         "score": ["kappa", "feature_norm"] * 2, "value": [kappa, norm, -kappa, -norm]})


def test_seed_summary_and_kappa_verdicts():
    runs = {f"s{i}": _measures(0.70 + 0.01 * i, 0.55 + 0.01 * i) for i in range(3)}
    summary = across_seeds(runs, dict.fromkeys(runs, "mc_infonce"))
    row = summary[(summary.measure == "R-AUROC") & (summary.score == "kappa")].iloc[0]
    assert row.runs == 3 and row["mean"] == pytest.approx(0.71) and row.low < 0.71 < row.high
    verdicts = kappa_verdicts(runs, dict.fromkeys(runs, "mc_infonce"))
    # kappa is clearly better on both: larger R-AUROC and a more negative correlation with severity
    assert len(verdicts) == 2 and all("κ is above the best label-free baseline feature_norm" in v for v in verdicts)
    assert "paired difference +0.150 [+0.150, +0.150] over 3 runs" in verdicts[0]
    assert lower_is_better("Spearman with contrast") and not lower_is_better("Spearman with crop area")
    close = {f"s{i}": _measures(0.60 + 0.05 * (i - 1), 0.59 + 0.05 * (1 - i)) for i in range(3)}
    verdicts = kappa_verdicts(close, dict.fromkeys(close, "g"))
    assert verdicts and all("level with" in v for v in verdicts)  # paired differences -0.09, +0.01, +0.11
    worse = {f"s{i}": _measures(0.5, 0.6 + 0.01 * i) for i in range(3)}
    assert all("is below" in v for v in kappa_verdicts(worse, dict.fromkeys(worse, "g")))


def test_kappa_verdicts_are_paired_not_interval_overlap():
    # kappa and the norm vary together across runs (wide, overlapping intervals) but kappa is ahead in every
    # run by 0.01-0.02: paired, that is "above"; compared by interval overlap it would not be
    runs = {f"s{i}": _measures(0.50 + 0.1 * i + 0.01 * (i % 2 + 1), 0.50 + 0.1 * i) for i in range(4)}
    verdicts = kappa_verdicts(runs, dict.fromkeys(runs, "g"))
    summary = across_seeds(runs, dict.fromkeys(runs, "g"))
    k = summary[(summary.measure == "R-AUROC") & (summary.score == "kappa")].iloc[0]
    n = summary[(summary.measure == "R-AUROC") & (summary.score == "feature_norm")].iloc[0]
    assert k.low < n.high  # the two intervals overlap
    assert all("κ is above" in v for v in verdicts), verdicts


def test_welch_interval_matches_scipy_and_allows_one_side_without_spread():
    import numpy as np
    from scipy import stats

    from analysis.measures.seed_summary import welch_interval

    a, b = np.array([56.6, 56.1, 55.9]), np.array([46.23, 43.41, 43.29, 44.0])
    d, lo, hi = welch_interval(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(a.mean() - b.mean()) and (lo, hi) == pytest.approx((ref.low, ref.high))
    d, lo, hi = welch_interval(a, np.array([55.2, 55.2, 55.2]))  # the other side has no spread: a's t-interval
    half = stats.t.ppf(0.975, 2) * a.std(ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((d - half, d + half))
