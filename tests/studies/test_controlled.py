"""probclr controlled: the known process, the measures against closed forms and exact draws, the likelihood's
optimum at the true posterior (the positive control of the loss itself), and the command end to end."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clihelp import bad, ok
from scipy import stats

from probclr.model.distributions import PowerSpherical, VonMisesFisher
from probclr.model.losses import mc_infonce
from studies.controlled.measures import (
    cosine_tail_threshold,
    coverage,
    pairwise_cosine_spearman,
    procrustes_r2,
)
from studies.controlled.process import Posterior, ProcessConfig, _distinct_choices, positive_pairs
from studies.controlled.regime import regime_map


@pytest.mark.parametrize("dim", [3, 10, 64])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_power_spherical_cap_matches_the_beta_closed_form(dim, level):
    # (w + 1) / 2 ~ Beta((d - 1) / 2 + kappa, (d - 1) / 2) (De Cao & Aziz 2020)
    kappa = torch.tensor([0.5, 4.0, 20.0, 300.0, 5000.0])
    t = cosine_tail_threshold(kappa, dim, "power_spherical", level).double().numpy()
    ref = 2 * stats.beta.ppf(1 - level, (dim - 1) / 2 + kappa.numpy(), (dim - 1) / 2) - 1
    np.testing.assert_allclose(t, ref, atol=2e-3)


@pytest.mark.parametrize("dim", [3, 10])
def test_vmf_cap_holds_its_level_of_exact_draws(dim):
    torch.manual_seed(0)
    kappa = torch.tensor([1.0, 10.0, 100.0])
    mu = F.normalize(torch.randn(3, dim), dim=1)
    w = (VonMisesFisher(mu, kappa).sample((20000,)) * mu).sum(-1)  # (S, 3)
    for level in (0.5, 0.9):
        share = (w >= cosine_tail_threshold(kappa, dim, "vmf", level)).float().mean(0)
        assert torch.allclose(share, torch.full_like(share, level), atol=0.015), (level, share)


def test_a_rotated_copy_is_recovered_exactly_and_an_unrelated_one_is_not():
    torch.manual_seed(0)
    mu = F.normalize(torch.randn(600, 8), dim=1)
    rot = torch.linalg.qr(torch.randn(8, 8))[0]
    r2, fitted = procrustes_r2(mu @ rot, mu)
    assert r2 > 0.999999 and torch.allclose(fitted, rot.double(), atol=1e-6)
    assert pairwise_cosine_spearman(mu @ rot, mu, 300) > 0.999999
    other = F.normalize(torch.randn(600, 8), dim=1)
    assert procrustes_r2(other, mu)[0] < 0.1 and abs(pairwise_cosine_spearman(other, mu, 300)) < 0.05


def test_exact_posterior_draws_are_covered_at_their_level_and_overconfidence_is_not():
    torch.manual_seed(0)
    mu = F.normalize(torch.randn(4000, 10), dim=1)
    kappa = torch.exp(torch.empty(4000).uniform_(math.log(4), math.log(64)))
    z = PowerSpherical(mu, kappa).rsample()
    cov = coverage(mu, kappa, z, "power_spherical")
    for level, share in cov.items():
        assert abs(share - level) < 0.03, cov
    assert coverage(mu, 4 * kappa, z, "power_spherical")[0.9] < 0.75  # four times too certain: under-covers


def test_the_process_is_seeded_bounded_spread_and_pairs_are_close():
    cfg = ProcessConfig(pool=1024)
    post = Posterior(cfg, torch.Generator().manual_seed(3))
    again = Posterior(cfg, torch.Generator().manual_seed(3))
    x = torch.rand(2000, cfg.dim_x, generator=torch.Generator().manual_seed(0))
    mu, kappa = post(x)
    assert torch.equal(mu, again(x)[0]) and torch.equal(kappa, again(x)[1])
    assert torch.allclose(mu.norm(dim=1), torch.ones(2000), atol=1e-5)
    assert kappa.min() >= cfg.kappa_min - 1e-4 and kappa.max() <= cfg.kappa_max + 1e-3
    assert abs(float((mu @ mu.T).mean())) < 0.05  # the means cover the sphere about evenly
    xa, xb = positive_pairs(post, 256, torch.Generator().manual_seed(1))
    assert torch.unique(xb, dim=0).shape[0] == 256  # no view twice in a batch
    near = (post(xa)[0] * post(xb)[0]).sum(1).mean()
    assert near > 0.4, near  # partners' true means are close; unrelated ones average 0


def test_distinct_choices_never_repeat_and_follow_the_weights():
    logits = torch.zeros(8, 10)
    logits[:, 0] = 50.0  # every row wants candidate 0: one row gets it, the others draw among the rest
    pick = _distinct_choices(logits, torch.Generator().manual_seed(0))
    assert len(set(pick.tolist())) == 8 and (pick == 0).sum() == 1


def test_the_likelihood_is_highest_at_the_true_posterior():
    """The positive control of the loss: on pairs from the process, MC-InfoNCE (vMF, the process's family) at
    the true mu* is lower at the true kappa* than at kappa* scaled by 1/4 or 4, or at a constant kappa."""
    torch.manual_seed(0)
    cfg = ProcessConfig(pool=2048)
    post = Posterior(cfg, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    batches = [positive_pairs(post, 256, gen) for _ in range(4)]

    def loss(scale):
        total = 0.0
        for xa, xb in batches:
            (ma, ka), (mb, kb) = post(xa), post(xb)
            ka, kb = scale(ka), scale(kb)
            total += float(mc_infonce(ma, ka, mb, kb, 1 / cfg.kappa_pos, 128, posterior="vmf"))
        return total / len(batches)

    true = loss(lambda k: k)
    assert true < loss(lambda k: k / 4) - 0.05
    assert true < loss(lambda k: 4 * k) - 0.05
    assert true < loss(lambda k: torch.full_like(k, 16.0)) - 0.02  # per-input kappa carries information


def test_controlled_quick_end_to_end(tmp_path):
    out = tmp_path / "ctl"
    text = ok(["controlled", "--quick", "--seeds", "1", "--out", str(out)])
    assert "Spearman" in text
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert {r["method"] for r in rows} == {"mc_infonce", "mc_infonce_vmf", "implicit", "mu_then_kappa", "mu_then_joint",
                                          "shrinkage", "nt_xent_norm"}
    for r in rows:
        assert {"method", "seed", "spearman_kappa_true", "mu_recovery"} <= set(r)
        assert -1 <= r["spearman_kappa_true"] <= 1
    mc = next(r for r in rows if r["method"] == "mc_infonce")
    assert mc["spearman_kappa_true"] > 0.6, mc  # recovers the ranking of the true ambiguity even in a minute
    assert 0 <= mc["coverage_90"] <= 1 and "coverage_90" not in next(r for r in rows if r["method"] == "nt_xent_norm")
    assert res["provenance"]["git_sha"] is None or len(res["provenance"]["git_sha"]) >= 40
    assert (out / "table.md").read_text().startswith("# Controlled study")
    assert (out / "kappa_vs_true.png").stat().st_size > 1000
    lines = (out / "rows.jsonl").read_text().count("\n")
    ok(["controlled", "--quick", "--seeds", "1", "--out", str(out)])  # resumed: nothing retrained
    assert (out / "rows.jsonl").read_text().count("\n") == lines
    bad(["controlled", "--out", str(out), "--seeds", "1"], "other settings")  # full budget into a quick dir
    ok(["report", str(out), "--out", str(tmp_path / "rep")])  # the report renders the study
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Controlled study `../ctl`" in summary and "| mc_infonce | 1 |" in summary
    assert "mc_infonce − method: spearman_kappa_true" in summary
    assert "data:image/png;base64" in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.parametrize(("args", "match"), [
    (["--seeds", "0"], "--seeds"), (["--split", "train"], "val or test"), (["--method", "bogus"], "bogus"),
])
def test_controlled_bad_input_is_one_line(tmp_path, args, match):
    bad(["controlled", "--quick", "--out", str(tmp_path / "c"), *args], match)
    assert not (tmp_path / "c" / "rows.jsonl").exists()


def test_the_surrogate_meets_the_likelihood_as_kappa_outgrows_the_dimension():
    rows = regime_map(dims=(16,), scales=(0.25, 64.0, 1e4), batches=1, batch=128, samples=32)
    low, high, huge = rows
    assert high["grad_corr"] > low["grad_corr"] + 0.2, rows  # the surrogate moves kappa as the likelihood does
    assert abs(huge["gap_nats"]) < 0.05 and huge["mean_rho"] > 0.999, huge  # both are NT-Xent on mu there
