"""The kappa variants (BENCHMARKS.md §6): the anchor's implicit head and the official code's two training phases."""

import dataclasses

import pytest
import torch

from probclr.config import Config, LossConfig, OptimConfig, validate
from probclr.errors import ConfigError
from probclr.model.build import build_model
from probclr.model.heads import HeadOutput, ImplicitProbabilisticHead
from probclr.train.step import contrastive_loss, phase_of


def test_implicit_head_kappa_is_the_scaled_norm_of_the_unnormalised_projection():
    torch.manual_seed(0)
    head = ImplicitProbabilisticHead(16, 16, 8, kappa_min=1.0, kappa_max=1e4, scale=3.0).eval()
    h = torch.randn(6, 16)
    out = head(h)
    v = head.direction(h).proj  # (6, 8), computed again by hand
    torch.testing.assert_close(out.mu, v / v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(out.kappa, 1.0 + 3.0 * v.norm(dim=1))
    torch.testing.assert_close(out.mu.norm(dim=1), torch.ones(6))


def test_implicit_head_clips_at_kappa_max_and_refuses_bad_bounds():
    head = ImplicitProbabilisticHead(4, 4, 4, kappa_min=1.0, kappa_max=2.0, scale=1e6).eval()
    assert torch.all(head(torch.randn(5, 4) * 10).kappa <= 2.0)
    with pytest.raises(ValueError, match="scale"):
        ImplicitProbabilisticHead(4, 4, 4, scale=0.0)


def test_build_model_picks_the_head_the_config_names():
    cfg = dataclasses.replace(Config(), loss=LossConfig(name="mc_infonce", kappa_head="implicit", implicit_scale=2.0))
    model = build_model(cfg, torch.zeros(3), torch.ones(3))
    assert isinstance(model.head, ImplicitProbabilisticHead) and model.head.scale == 2.0


def test_two_phases_switch_at_mu_fraction_of_the_epochs():
    cfg = dataclasses.replace(Config(), loss=LossConfig(phases="mu_then_kappa", mu_fraction=0.5),
                              optim=OptimConfig(epochs=4))
    assert [phase_of(cfg, e) for e in range(4)] == ["mu", "mu", "kappa", "kappa"]
    assert phase_of(Config(), 0) == "joint"
    official = dataclasses.replace(cfg, loss=LossConfig(phases="mu_then_joint", mu_fraction=0.25))
    assert [phase_of(official, e) for e in range(4)] == ["mu", "joint", "joint", "joint"]


@pytest.mark.parametrize("phase,mu_grad,kappa_grad", [("joint", True, True), ("mu", True, False), ("kappa", False, True)])
def test_a_phase_detaches_the_other_parameter(phase, mu_grad, kappa_grad):
    torch.manual_seed(0)
    cfg = dataclasses.replace(Config(), loss=LossConfig(name="mc_infonce", temperature=0.5, samples=4))
    mu = torch.nn.functional.normalize(torch.randn(8, 6), dim=1).requires_grad_()
    kappa = (torch.rand(8) * 50 + 5).requires_grad_()
    loss, _ = contrastive_loss(HeadOutput(mu, kappa), cfg, phase)
    loss.backward()
    assert (mu.grad is not None and mu.grad.abs().sum() > 0) == mu_grad
    assert (kappa.grad is not None and kappa.grad.abs().sum() > 0) == kappa_grad


def test_bad_variant_values_are_config_errors():
    for loss in (LossConfig(mu_fraction=1.5), LossConfig(implicit_scale=0.0)):
        with pytest.raises(ConfigError, match="mu_fraction|implicit_scale"):
            validate(dataclasses.replace(Config(), loss=loss))


def test_vmf_posterior_reduces_to_nt_xent_and_agrees_with_power_spherical_when_concentrated():
    """loss.posterior=vmf: as kappa grows every draw is mu (the loss becomes NT-Xent); at a moderate spread on
    S^15, with the vMF's kappa chosen so that both families have the same mean resultant length (De Cao & Aziz
    2020 compare them so), the two likelihoods differ by less than the Monte-Carlo noise of either."""
    from probclr.model.losses import mc_infonce, nt_xent

    torch.manual_seed(0)
    mu_a = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    mu_b = torch.nn.functional.normalize(mu_a + 0.5 * torch.randn(8, 16), dim=1)
    ref = nt_xent(mu_a, mu_b, 0.5).item()
    big = torch.full((8,), 1e6)
    assert mc_infonce(mu_a, big, mu_b, big, 0.5, 16, posterior="vmf").item() == pytest.approx(ref, abs=1e-3)
    from probclr.model.distributions import VonMisesFisher
    from probclr.model.losses import shrinkage

    k_ps = torch.full((8,), 200.0)
    target = shrinkage(k_ps[:1].double(), 16)  # E[mu^T z] of PowerSpherical(mu, 200) on S^15
    lo, hi = torch.tensor([1.0], dtype=torch.float64), torch.tensor([1e4], dtype=torch.float64)
    e1 = torch.eye(16, dtype=torch.float64)[:1]
    for _ in range(60):  # bisection: A_16(kappa) is increasing
        mid = (lo + hi) / 2
        low = VonMisesFisher(e1, mid).mean_resultant_length() < target
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    k_vmf = torch.full((8,), float(lo))
    vmf = torch.stack([mc_infonce(mu_a, k_vmf, mu_b, k_vmf, 0.5, 64, posterior="vmf") for _ in range(8)])
    ps = torch.stack([mc_infonce(mu_a, k_ps, mu_b, k_ps, 0.5, 64, posterior="power_spherical") for _ in range(8)])
    assert abs(vmf.mean() - ps.mean()) < 3 * (vmf.std() + ps.std()) / 8**0.5 + 2e-3
    assert abs(vmf.mean().item() - ref) > 1e-3  # kappa = 200 is not yet the deterministic limit


def test_the_configured_posterior_is_used_and_trains_mu_and_kappa():
    torch.manual_seed(0)
    mu = torch.nn.functional.normalize(torch.randn(8, 6), dim=1).requires_grad_()
    kappa = (torch.rand(8) * 50 + 5).requires_grad_()
    cfg = dataclasses.replace(Config(), loss=LossConfig(name="mc_infonce", samples=4, kl_weight=1e-3, posterior="vmf"))
    loss, _ = contrastive_loss(HeadOutput(mu, kappa), cfg)
    loss.backward()
    assert torch.isfinite(loss) and mu.grad.abs().sum() > 0 and kappa.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="posterior must be one of power_spherical, vmf, got 'gauss'"):
        from probclr.model.losses import mc_infonce

        mc_infonce(mu.detach(), kappa.detach(), mu.detach(), kappa.detach(), posterior="gauss")
    from probclr.config import load_config

    with pytest.raises(ConfigError, match="loss.posterior must be one of 'power_spherical', 'vmf', got 'gauss'"):
        load_config(None, ["loss.posterior=gauss"])
    assert load_config(None, ["loss.posterior=vmf"]).loss.posterior == "vmf"
