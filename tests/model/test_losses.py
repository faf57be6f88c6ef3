import math

import pytest
import torch
import torch.nn.functional as F

from probclr.model.losses import nt_xent


def slow_nt_xent(z_a, z_b, t):
    """Eq. 1 of Chen et al. 2020, literally, one anchor at a time."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = [(z[i] @ z[k]).item() / t for k in range(n2) if k != i]
        total += -(z[i] @ z[j]).item() / t + math.log(sum(math.exp(s) for s in sims))
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (16, 128, 0.5), (7, 4, 2.0)])
def test_matches_slow_loop(n, d, t):
    g = torch.Generator().manual_seed(n * d)
    z_a, z_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z_a, z_b, t).item() == pytest.approx(slow_nt_xent(z_a, z_b, t), rel=1e-5)


def test_closed_form_identical_views_orthogonal():
    # N orthonormal directions, both views equal: positive sim 1, all other sims 0 (2N-2 of them)
    n, t = 4, 0.5
    z = torch.eye(n, 8)
    expected = -1 / t + math.log(math.exp(1 / t) + (2 * n - 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    base = nt_xent(z_a, z_b)
    assert nt_xent(3 * z_a, 0.1 * z_b).item() == pytest.approx(base.item(), rel=1e-5)
    assert nt_xent(z_b, z_a).item() == pytest.approx(base.item(), rel=1e-5)


@pytest.mark.parametrize("t", [1e-3, 0.05, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_finite_at_extreme_temperatures(t, dtype):
    g = torch.Generator().manual_seed(1)
    z_a = torch.randn(8, 16, generator=g).to(dtype).requires_grad_()
    z_b = torch.randn(8, 16, generator=g).to(dtype).requires_grad_()
    loss = nt_xent(z_a, z_b, t)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()


def test_low_temperature_limit_is_hard_margin():
    # as t -> 0, loss * t -> max(0, max_{k != i} sim_ik - sim_ij) averaged: finite in log space
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z_a, z_b, 1e-4).item() == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(
    "z_a,z_b,t,match",
    [
        (torch.randn(1, 4), torch.randn(1, 4), 0.5, "N >= 2"),
        (torch.randn(3, 4), torch.randn(2, 4), 0.5, "shape"),
        (torch.randn(3), torch.randn(3), 0.5, "shape"),
        (torch.randn(3, 4), torch.randn(3, 4), 0.0, "temperature"),
        (torch.randn(3, 4), torch.randn(3, 4), -1.0, "temperature"),
    ],
)
def test_bad_input(z_a, z_b, t, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(z_a, z_b, t)


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_mc_infonce_reduces_to_nt_xent_as_kappa_grows():
    from probclr.model.losses import mc_infonce

    torch.manual_seed(0)
    mu_a, mu_b = _unit(6, 16, 1), _unit(6, 16, 2)
    ref = nt_xent(mu_a, mu_b, 0.5).item()
    gaps = []
    for kappa in (1e2, 1e4, 1e6):
        k = torch.full((6,), kappa)
        gaps.append(abs(mc_infonce(mu_a, k, mu_b, k, 0.5, samples=16).item() - ref))
    assert gaps[-1] < 1e-3 and gaps[0] > gaps[-1]


def test_mc_infonce_uncertainty_costs_likelihood_on_good_pairs_and_helps_on_wrong_ones():
    """A sharp embedding of a well-matched pair is best kept sharp; on a pair the means get wrong,
    a lower concentration yields a higher likelihood (the loss rewards honest uncertainty)."""
    from probclr.model.losses import mc_infonce

    torch.manual_seed(0)
    mu = _unit(8, 8, 3)
    good_b = mu.clone()
    sharp, vague = torch.full((8,), 1e4), torch.full((8,), 2.0)
    assert mc_infonce(mu, sharp, good_b, sharp, 0.1, 64) < mc_infonce(mu, vague, good_b, vague, 0.1, 64)
    wrong_b = mu.roll(1, dims=0)  # every positive looks like another image's view
    assert mc_infonce(mu, vague, wrong_b, vague, 0.1, 64) < mc_infonce(mu, sharp, wrong_b, sharp, 0.1, 64)


def test_mc_infonce_gradients_and_bad_input():
    from probclr.model.losses import mc_infonce

    mu_a = _unit(4, 5, 4).requires_grad_()
    k = torch.full((4,), 5.0, requires_grad=True)
    loss = mc_infonce(mu_a, k, _unit(4, 5, 5), k, 0.2, 4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(k.grad).all() and torch.isfinite(mu_a.grad).all()
    with pytest.raises(ValueError, match="N >= 2"):
        mc_infonce(_unit(1, 3, 0), torch.ones(1), _unit(1, 3, 1), torch.ones(1))
    with pytest.raises(ValueError, match="shape"):
        mc_infonce(_unit(3, 3, 0), torch.ones(2), _unit(3, 3, 1), torch.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        mc_infonce(_unit(3, 3, 0), torch.ones(3), _unit(3, 3, 1), torch.ones(3), temperature=0)


def test_probabilistic_head_bounds_kappa():
    from probclr.model.heads import ProbabilisticHead

    head = ProbabilisticHead(16, 32, 8, kappa_min=2.0, kappa_max=50.0)
    e = head(torch.randn(10, 16) * 100)
    assert e.mu.shape == (10, 8) and e.kappa.shape == (10,)
    torch.testing.assert_close(e.mu.norm(dim=1), torch.ones(10))
    assert (e.kappa >= 2.0 - 1e-4).all() and (e.kappa <= 50.0 + 1e-3).all()
    with pytest.raises(ValueError, match="kappa_min"):
        ProbabilisticHead(4, 4, 4, kappa_min=5.0, kappa_max=1.0)


def test_mc_infonce_kl_weight_penalises_concentration():
    from probclr.model.losses import mc_infonce

    torch.manual_seed(0)
    mu_a, mu_b = _unit(8, 16, 0), _unit(8, 16, 0)  # perfect pairs: without the prior, kappa only gains
    k = torch.full((8,), 1e4, requires_grad=True)
    mc_infonce(mu_a, k, mu_b, k, 0.2, 8).backward()
    assert (k.grad <= 0).all()  # descending the loss raises kappa
    k.grad = None
    mc_infonce(mu_a, k, mu_b, k, 0.2, 8, kl_weight=0.1).backward()
    assert (k.grad > 0).all()  # with the bottleneck, very large kappa is pushed back
    with pytest.raises(ValueError, match="kl_weight"):
        mc_infonce(mu_a, k, mu_b, k, 0.2, 8, kl_weight=-1.0)


def _shrinkage_slow(mu_a, k_a, mu_b, k_b, t):
    """The deterministic baseline by its definition, anchor by anchor, in float64."""
    mu = F.normalize(torch.cat([mu_a, mu_b]).double(), dim=1)
    kappa = torch.cat([k_a, k_b]).double()
    rho = kappa / (kappa + mu.shape[1] - 1)
    n2 = mu.shape[0]
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        logits = [float(rho[i] * rho[k] * (mu[i] @ mu[k]) / t) for k in range(n2) if k != i]
        target = float(rho[i] * rho[pos] * (mu[i] @ mu[pos]) / t)
        total += -(target - math.log(sum(math.exp(v) for v in logits)))
    return total / n2


def test_shrinkage_loss_matches_its_definition_and_reduces_to_nt_xent():
    from probclr.model.distributions import PowerSpherical
    from probclr.model.losses import shrinkage_nt_xent_global

    g = torch.Generator().manual_seed(0)
    mu_a, mu_b = (F.normalize(torch.randn(6, 5, generator=g), dim=1) for _ in range(2))
    k_a, k_b = (torch.rand(6, generator=g) * 50 + 0.5 for _ in range(2))
    got = shrinkage_nt_xent_global(mu_a, k_a, mu_b, k_b, 0.3)
    assert float(got) == pytest.approx(_shrinkage_slow(mu_a, k_a, mu_b, k_b, 0.3), rel=1e-5)
    kl = PowerSpherical(torch.cat([mu_a, mu_b]), torch.cat([k_a, k_b])).kl_to_uniform().mean()
    with_kl = shrinkage_nt_xent_global(mu_a, k_a, mu_b, k_b, 0.3, kl_weight=0.1)
    assert float(with_kl) == pytest.approx(float(got + 0.1 * kl), rel=1e-5)
    huge = torch.full((6,), 1e9)
    assert float(shrinkage_nt_xent_global(mu_a, huge, mu_b, huge, 0.3)) == pytest.approx(
        float(nt_xent(mu_a, mu_b, 0.3)), rel=1e-5)


def test_shrinkage_is_the_power_spherical_mean_length():
    """rho = kappa / (kappa + D - 1) against the mean of many Power Spherical draws."""
    from probclr.model.distributions import PowerSpherical
    from probclr.model.losses import shrinkage

    torch.manual_seed(0)
    mu = F.normalize(torch.randn(3, 8), dim=1)
    kappa = torch.tensor([2.0, 20.0, 200.0])
    draws = PowerSpherical(mu, kappa).rsample(torch.Size([40000]))  # (M, 3, 8)
    mean_length = (draws.mean(0) * mu).sum(1)  # E[z] . mu
    torch.testing.assert_close(mean_length, shrinkage(kappa, 8), atol=4e-3, rtol=0)
