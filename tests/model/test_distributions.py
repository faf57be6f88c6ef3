import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import integrate

from probclr.model.bessel import log_bessel_iv
from probclr.model.distributions import PowerSpherical, VonMisesFisher

mpmath.mp.dps = 40
DIMS = [2, 3, 4, 5, 10, 21, 22, 32, 128, 256, 512]
KAPPAS = [1e-3, 0.05, 1.0, 7.5, 10.0, 60.0, 199.0, 201.0, 1e3, 1e4, 1e5]


def mp_log_iv(nu, k):
    return float(mpmath.log(mpmath.besseli(nu, k)))


@pytest.mark.parametrize("d", DIMS)
def test_log_bessel_matches_mpmath(d):
    nu = d / 2 - 1
    k = torch.tensor(KAPPAS, dtype=torch.float64)
    got = log_bessel_iv(nu, k)
    ref = torch.tensor([mp_log_iv(nu, x) for x in KAPPAS], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-6)
    got32 = log_bessel_iv(nu, k.float())
    torch.testing.assert_close(got32.double(), ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("d,kappa", [(3, 0.01), (3, 50.0), (10, 5.0), (32, 300.0), (512, 1.0), (512, 1e4), (4, 1e3)])
def test_log_bessel_gradient_matches_mpmath(d, kappa):
    nu = d / 2 - 1
    k = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
    log_bessel_iv(nu, k).sum().backward()
    # d/dk log I_nu(k) = I_{nu+1}(k) / I_nu(k) + nu / k
    ref = float(mpmath.besseli(nu + 1, kappa) / mpmath.besseli(nu, kappa)) + nu / kappa
    assert k.grad.item() == pytest.approx(ref, rel=1e-6)


def test_vmf_log_normaliser_closed_form_d3():
    k = torch.tensor([0.1, 1.0, 20.0, 500.0], dtype=torch.float64)
    vmf = VonMisesFisher(torch.tensor([[0.0, 0.0, 1.0]] * 4, dtype=torch.float64), k)
    log_sinh = k + torch.log1p(-torch.exp(-2 * k)) - math.log(2)
    torch.testing.assert_close(vmf.log_normalizer(), torch.log(k) - math.log(4 * math.pi) - log_sinh)


def _sphere_area(n):  # |S^{n}| embedded in R^{n+1}
    return 2 * math.pi ** ((n + 1) / 2) / math.gamma((n + 1) / 2)


@pytest.mark.parametrize("cls", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("d", [2, 3, 5, 10])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_density_integrates_to_one(cls, d, kappa):
    loc = torch.zeros(d, dtype=torch.float64)
    loc[0] = 1.0
    dist = cls(loc, torch.tensor(kappa, dtype=torch.float64))

    def integrand(theta):
        x = torch.zeros(d, dtype=torch.float64)
        x[0], x[1] = math.cos(theta), math.sin(theta)
        return math.exp(dist.log_prob(x).item()) * math.sin(theta) ** (d - 2)

    total, _ = integrate.quad(integrand, 0, math.pi, limit=200)
    assert total * _sphere_area(d - 2) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("d", [3, 16, 128])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 300.0])
def test_sampling_moments(d, kappa):
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    for cls in (VonMisesFisher, PowerSpherical):
        dist = cls(loc, torch.tensor(kappa, dtype=torch.float64))
        x = dist.sample((20000,))
        assert x.shape == (20000, d)
        torch.testing.assert_close(x.norm(dim=-1), torch.ones(20000, dtype=torch.float64), atol=1e-9, rtol=0)
        t = x @ loc
        assert t.mean().item() == pytest.approx(dist.mean_resultant_length().item(), abs=4 * t.std().item() / 141 + 1e-3)
        # the orthogonal part is isotropic: its mean vanishes
        assert (x - t.unsqueeze(1) * loc).mean(0).abs().max().item() < 0.05


@pytest.mark.parametrize("cls", [VonMisesFisher, PowerSpherical])
def test_entropy_matches_monte_carlo(cls):
    torch.manual_seed(1)
    loc = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=-1)
    dist = cls(loc, torch.tensor([0.7, 25.0], dtype=torch.float64))
    x = dist.sample((40000,))
    mc = -dist.log_prob(x).mean(0)
    torch.testing.assert_close(dist.entropy(), mc, atol=0.03, rtol=0)


@pytest.mark.parametrize("d", [2, 3, 64, 512])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 1e3, 1e5])
def test_finite_log_prob_and_gradients_in_float32(d, kappa):
    torch.manual_seed(2)
    loc = torch.nn.functional.normalize(torch.randn(4, d), dim=-1).requires_grad_()
    k = torch.full((4,), kappa, requires_grad=True)
    for cls in (VonMisesFisher, PowerSpherical):
        dist = cls(loc, k)
        x = PowerSpherical(loc.detach(), torch.full((4,), 10.0)).sample()
        lp = dist.log_prob(x)
        assert torch.isfinite(lp).all()
        lp.sum().backward()
        assert torch.isfinite(k.grad).all() and torch.isfinite(loc.grad).all()
        k.grad, loc.grad = None, None


def test_power_spherical_rsample_is_reparameterised():
    torch.manual_seed(3)
    loc = torch.nn.functional.normalize(torch.randn(5, 6), dim=-1).requires_grad_()
    k = torch.full((5,), 4.0, requires_grad=True)
    x = PowerSpherical(loc, k).rsample((3,))
    assert x.shape == (3, 5, 6)
    (x * torch.randn_like(x)).sum().backward()
    assert loc.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    # higher concentration pulls samples towards loc: d E[mu^T x] / d kappa > 0
    k2 = torch.tensor([2.0], requires_grad=True)
    mu = torch.tensor([[1.0, 0.0, 0.0]])
    t = (PowerSpherical(mu, k2).rsample((20000,)) @ mu.T).mean()
    t.backward()
    assert k2.grad.item() > 0


def test_validation_uses_the_sphere_constraint():
    with pytest.raises(ValueError):
        VonMisesFisher(torch.tensor([2.0, 0.0]), torch.tensor(1.0), validate_args=True)
    with pytest.raises(ValueError):
        PowerSpherical(torch.tensor([1.0, 0.0]), torch.tensor(-1.0), validate_args=True)
    assert np.isfinite(VonMisesFisher(torch.tensor([1.0, 0.0]), torch.tensor(1.0)).entropy().item())


@pytest.mark.parametrize("family", ["vmf", "ps"])
def test_kl_to_uniform_matches_monte_carlo(family):
    import math

    from probclr.model.distributions import PowerSpherical, VonMisesFisher

    d = 5
    loc = torch.nn.functional.normalize(torch.randn(3, d, dtype=torch.float64), dim=1)
    kappa = torch.tensor([0.5, 5.0, 50.0], dtype=torch.float64)
    dist = (VonMisesFisher if family == "vmf" else PowerSpherical)(loc, kappa)
    torch.manual_seed(0)
    z = dist.sample(torch.Size([20000]))
    log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
    mc = (dist.log_prob(z) + log_area).mean(0)  # E_q[log q - log u]
    torch.testing.assert_close(dist.kl_to_uniform(), mc, atol=0.03, rtol=0.02)
    assert (dist.kl_to_uniform() >= 0).all()


@pytest.mark.parametrize("d", [16, 128])
@pytest.mark.parametrize("kappa", [5.0, 100.0, 3000.0])
def test_vmf_implicit_gradient_matches_scipy_quadrature(d, kappa):
    """dw/dkappa = int_w^1 (t - E t) q(t) / q(w) dt (Figurnov et al. 2018), against SciPy's adaptive quad."""
    from scipy import integrate

    from probclr.model.distributions import vmf_dw_dkappa

    loc = torch.zeros(d, dtype=torch.float64)
    loc[0] = 1
    a = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).mean_resultant_length().item()
    ex = (d - 3) / 2
    for w in (a - 0.5 * (1 - a), a, a + 0.5 * (1 - a)):
        def integrand(t, w=w):
            return (t - a) * math.exp(kappa * (t - w) + ex * (math.log1p(-t * t) - math.log1p(-w * w)))

        ref = integrate.quad(integrand, w, 1, epsabs=0, epsrel=1e-12, limit=200)[0]
        got = vmf_dw_dkappa(torch.tensor(w, dtype=torch.float64), torch.tensor(kappa, dtype=torch.float64), d,
                            torch.tensor(a, dtype=torch.float64)).item()
        assert got == pytest.approx(ref, rel=1e-7)


@pytest.mark.parametrize("d,kappa", [(16, 5.0), (128, 100.0), (128, 3000.0)])
def test_vmf_rsample_gradients_are_the_derivatives_of_its_moments(d, kappa):
    """E[w] = A_d(kappa) and E[w^2] = 1 - (d - 1) A_d(kappa) / kappa (Mardia & Jupp 2000): the reparameterised
    gradient of the Monte-Carlo mean is unbiased for the derivative of the closed form (autograd on the Bessel
    ratio), within 4 standard errors of its per-draw terms f'(w) dw/dkappa, for a linear and a non-linear f."""
    from probclr.model.distributions import vmf_dw_dkappa

    torch.manual_seed(0)
    n = 40_000
    loc = torch.zeros(d, dtype=torch.float64)
    loc[0] = 1
    cases = ((lambda w: w, lambda w: torch.ones_like(w), lambda a, k: a),
             (lambda w: w * w, lambda w: 2 * w, lambda a, k: 1 - (d - 1) * a / k))
    for f, df, closed in cases:
        k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
        dist = VonMisesFisher(loc, k)
        w = dist.rsample((n,))[:, 0]  # (n,)
        f(w).mean().backward()
        terms = df(w.detach()) * vmf_dw_dkappa(w.detach(), k.detach().expand(n), d,
                                                dist.mean_resultant_length().detach().expand(n))  # (n,)
        assert k.grad.item() == pytest.approx(terms.mean().item(), rel=1e-9)  # autograd = the implicit terms
        k2 = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
        closed(VonMisesFisher(loc, k2).mean_resultant_length(), k2).backward()
        assert abs(terms.mean().item() - k2.grad.item()) < 4 * terms.std().item() / n**0.5
        assert abs(k2.grad.item()) > 10 * terms.std().item() / n**0.5  # the check can tell a wrong sign or scale


def test_vmf_rsample_value_is_the_sampler_draw_and_moves_with_loc():
    torch.manual_seed(1)
    loc = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    k = torch.full((4,), 20.0, requires_grad=True)
    x = VonMisesFisher(loc, k).rsample((3,))  # (3, 4, 8)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(3, 4))
    (x * torch.randn_like(x)).sum().backward()
    assert loc.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
