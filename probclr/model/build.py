"""The SimCLR model a config describes: encoder + projection head (probabilistic with --new-loss)."""

from __future__ import annotations

from torch import Tensor, nn

from probclr.config import Config
from probclr.model.backbones import build_encoder
from probclr.model.heads import ImplicitProbabilisticHead, ProbabilisticHead, ProjectionHead, SimCLRModel


def build_model(cfg: Config, mean: Tensor, std: Tensor) -> SimCLRModel:
    """Encoder + projection head; with the probabilistic loss the head outputs (mu, kappa)."""
    encoder = build_encoder(cfg.model, mean, std)
    hidden = cfg.model.proj_hidden or encoder.out_dim
    head: nn.Module
    if cfg.loss.name in ("mc_infonce", "shrinkage"):  # both need (mu, kappa)
        args = (encoder.out_dim, hidden, cfg.model.proj_dim, cfg.loss.kappa_min, cfg.loss.kappa_max)
        head = (ImplicitProbabilisticHead(*args, scale=cfg.loss.implicit_scale) if cfg.loss.kappa_head == "implicit"
                else ProbabilisticHead(*args))
    else:
        head = ProjectionHead(encoder.out_dim, hidden, cfg.model.proj_dim)
    return SimCLRModel(encoder, head)
