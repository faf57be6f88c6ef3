"""The SimCLR model a config describes: encoder + projection head (probabilistic with --new-loss)."""

from __future__ import annotations

from torch import Tensor, nn

from probclr.config import Config
from probclr.model.backbones import build_encoder
from probclr.model.heads import ImplicitProbabilisticHead, ProbabilisticHead, ProjectionHead, SimCLRModel


def build_model(cfg: Config, mean: Tensor, std: Tensor, whitening: Tensor | None = None) -> SimCLRModel:
    """Encoder + projection head; with the probabilistic loss the head outputs (mu, kappa). ``whitening``: the
    frozen first layer's weights where ``model.convnet_whiten`` asks for one."""
    encoder = build_encoder(cfg.model, mean, std, whitening)
    return SimCLRModel(encoder, build_head(cfg, encoder.out_dim))


def build_head(cfg: Config, in_dim: int) -> nn.Module:
    """The projection head the loss needs, on features of ``in_dim``: (mu, kappa) for the probabilistic loss
    and its deterministic baseline (a kappa branch, or kappa implicit in the projection's norm), else a plain
    projection."""
    hidden = cfg.model.proj_hidden or in_dim
    if cfg.loss.name in ("mc_infonce", "shrinkage"):  # both need (mu, kappa)
        args = (in_dim, hidden, cfg.model.proj_dim, cfg.loss.kappa_min, cfg.loss.kappa_max)
        if cfg.loss.kappa_head == "implicit":
            return ImplicitProbabilisticHead(*args, scale=cfg.loss.implicit_scale)
        return ProbabilisticHead(*args)
    return ProjectionHead(in_dim, hidden, cfg.model.proj_dim)
