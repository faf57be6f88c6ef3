"""One SimCLR training step, shared by pretraining and ``probclr bench``: two augmented views of a batch,
the head's output, the contrastive loss and its gradients. The optimiser step stays with the caller, which
may skip it (a non-finite loss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from probclr.config import Config
from probclr.data.augment import SimCLRAugment
from probclr.device import autocast
from probclr.model.heads import HeadOutput, SimCLRModel
from probclr.model.losses import mc_infonce_global, nt_xent_global, shrinkage_nt_xent_global
from probclr.train.gradcache import grad_cached_backward


class StepModel(NamedTuple):
    """What a step runs: the model (whose parameters get gradients), the callable that runs it (the model
    itself, compiled, or wrapped for DDP), the config and the device."""

    model: SimCLRModel
    forward: Callable[[Tensor], tuple[Tensor, HeadOutput]]
    cfg: Config
    device: torch.device


Phase = Literal["joint", "mu", "kappa"]  # which of (mu, kappa) gets gradients: both, mu only, kappa only


def phase_of(cfg: Config, epoch: int) -> Phase:
    """The phase of ``epoch`` under ``loss.phases`` (:func:`phase_at` of the share of the epochs done)."""
    return phase_at(cfg, epoch / cfg.optim.epochs if cfg.optim.epochs else 0.0)


def phase_at(cfg: Config, progress: float) -> Phase:
    """``loss.phases`` at ``progress`` (the share of training done, in [0, 1)): joint throughout; or kappa
    detached before ``mu_fraction``, then mu detached (``mu_then_kappa``) or nothing (``mu_then_joint``, the
    official MCInfoNCE code's second phase)."""
    if cfg.loss.phases == "joint":
        return "joint"
    if progress < cfg.loss.mu_fraction:
        return "mu"
    return "kappa" if cfg.loss.phases == "mu_then_kappa" else "joint"


def _detach(out: HeadOutput, phase: Phase) -> HeadOutput:
    if phase == "mu" and out.kappa is not None:
        return HeadOutput(out.proj, out.kappa.detach())
    if phase == "kappa":
        return HeadOutput(out.proj.detach(), out.kappa)
    return out


def contrastive_loss(out: HeadOutput, cfg: Config, phase: Phase = "joint",
                     log_weight: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The configured loss on the head output of 2B stacked views; also the kappas, if any (2B,).
    With several processes both losses contrast against the global batch (``*_global``). ``phase`` detaches
    kappa ("mu": only mu is trained) or mu ("kappa") of the probabilistic head. ``log_weight`` (2B, 2B):
    label-aware negatives of soft-label pairs (probclr.data.pairs), None = every other view counts fully."""
    if out.kappa is not None:
        out = _detach(out, phase)
        assert out.kappa is not None
        mu_a, mu_b = out.mu.chunk(2)  # (B, P) unit each
        k_a, k_b = out.kappa.chunk(2)  # (B,) each
        if cfg.loss.name == "shrinkage":
            loss = shrinkage_nt_xent_global(mu_a, k_a, mu_b, k_b, cfg.loss.temperature, cfg.loss.kl_weight,
                                            log_weight)
        else:
            loss = mc_infonce_global(mu_a, k_a, mu_b, k_b, cfg.loss.temperature, cfg.loss.samples, cfg.loss.kl_weight,
                                     cfg.loss.posterior, log_weight)
        return loss, out.kappa.detach()
    z_a, z_b = out.proj.float().chunk(2)  # (B, P) each
    return nt_xent_global(z_a, z_b, cfg.loss.temperature, log_weight=log_weight), None


def two_views(aug: SimCLRAugment, x: Tensor, gen: torch.Generator) -> Tensor:
    """uint8 (B, C, H, W) -> float (2B, 3, S, S): every image's first view, then every image's second."""
    return torch.cat([aug(x, gen), aug(x, gen)])


def pair_views(aug: SimCLRAugment, x: Tensor, gen: torch.Generator) -> Tensor:
    """uint8 (2B, C, H, W), B anchors then their B partners -> float (2B, 3, S, S): one view of each."""
    b = x.shape[0] // 2
    return torch.cat([aug(x[:b], gen), aug(x[b:], gen)])


def train_step(
    m: StepModel, views: Tensor, opt: torch.optim.Optimizer, phase: Phase = "joint",
    log_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Gradients of the contrastive loss of ``views`` (2B, 3, S, S) in the model's parameters (the full
    batch's exact gradient chunk by chunk with ``optim.grad_cache_chunk``); returns the loss and the kappas.
    ``phase``, ``log_weight``: see :func:`contrastive_loss`."""
    cfg = m.cfg
    if cfg.run.channels_last:
        views = views.contiguous(memory_format=torch.channels_last)

    def head(v: Tensor) -> HeadOutput:
        with autocast(m.device, cfg.run.amp):
            return m.forward(v)[1]  # (2B, P) projections, or (mu, kappa) of the probabilistic head

    opt.zero_grad(set_to_none=True)
    if cfg.optim.grad_cache_chunk:
        return grad_cached_backward(m.model, head, views, lambda o: contrastive_loss(o, cfg, phase, log_weight),
                                    cfg.optim.grad_cache_chunk)
    loss, kappa = contrastive_loss(head(views), cfg, phase, log_weight)
    loss.backward()
    return loss, kappa
