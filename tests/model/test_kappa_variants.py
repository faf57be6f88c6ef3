"""The kappa variants of issue 15: the anchor's implicit head and the official code's two training phases."""

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
