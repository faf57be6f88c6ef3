import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from analysis.measures.uncertainty import auroc, misclassification_auroc, risk_coverage, spearman_ci


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounded: many ties
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_oracle_uncertainty_has_auroc_one_and_constant_one_half():
    labels = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(torch.randn(200, 10, generator=torch.Generator().manual_seed(1)), dim=1)
    wrong = probs.argmax(1) != labels
    oracle = (~wrong).double()  # certain exactly where right
    assert misclassification_auroc(oracle, probs, labels) == 1.0
    assert misclassification_auroc(torch.ones(200), probs, labels) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.ones(3), np.zeros(3))


def test_risk_coverage_hand_computed():
    rc = risk_coverage(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(rc.risk, [0, 1 / 2, 1 / 3, 2 / 4])
    assert rc.aurc == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    best = risk_coverage(np.array([0.9, 0.1, 0.8, 0.2]), np.array([0, 1, 0, 1])).aurc
    assert best < rc.aurc  # ordering the errors last is better


def test_spearman_matches_scipy_and_interval_covers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    c = spearman_ci(x, y, boots=300)
    assert c.rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert c.low < c.rho < c.high and c.high - c.low < 0.25
    groups = np.repeat(np.arange(100), 3)
    cg = spearman_ci(x, y, groups=groups, boots=300)
    assert cg.rho == pytest.approx(c.rho) and cg.low < cg.rho < cg.high
    with pytest.raises(ValueError, match="equal length"):
        spearman_ci(x, y[:10])


def test_kappa_temperature_reduces_to_temperature_scaling_for_constant_kappa_and_helps_when_it_informs():
    from analysis.measures.calibration import fit_temperature
    from analysis.measures.kappa_probe import KappaTemperature, fit_kappa_temperature

    g = torch.Generator().manual_seed(0)
    n = 4000
    kappa = torch.exp(torch.rand(n, generator=g) * 4)  # 1 .. 55
    clean = (kappa.log() / 4)[:, None]  # (N, 1): how informative the logits are, growing with kappa
    y = torch.randint(0, 5, (n,), generator=g)
    logits = 3 * torch.nn.functional.one_hot(y, 5) + torch.randn(n, 5, generator=g) * 1.5
    noisy = torch.rand(n, generator=g) < 0.5 * (1 - clean.squeeze(1))  # low kappa: labels more often wrong
    y_obs = torch.where(noisy, torch.randint(0, 5, (n,), generator=g), y)
    logits = logits * 2  # over-confident overall
    const = fit_kappa_temperature(logits, y_obs, torch.full((n,), 7.0))
    assert abs(const.t0 - fit_temperature(logits, y_obs)) < 1e-3 and abs(const.b) < 1e-9  # the kappa term vanishes
    assert torch.equal(KappaTemperature(1.0, 0.0, 0.0).probs(logits, kappa), torch.softmax(logits.double(), 1))
    kt = fit_kappa_temperature(logits[:2000], y_obs[:2000], kappa[:2000])
    t = fit_temperature(logits[:2000], y_obs[:2000])
    nll = torch.nn.functional.nll_loss
    ours = nll(kt.probs(logits[2000:], kappa[2000:]).log(), y_obs[2000:])
    plain_t = nll(torch.log_softmax(logits[2000:].double() / t, 1), y_obs[2000:])
    assert kt.b < 0 and ours < plain_t  # less certain embeddings get softer predictions, and NLL improves
