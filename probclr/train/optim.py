"""LARS (You et al. 2017), as used by SimCLR, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from probclr.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-layer step is scaled by the trust ratio eta * ||w|| / ||g + wd w||.

    Param groups with ``lars=False`` (BN and bias in SimCLR) get neither weight decay nor adaptation.
    """

    def __init__(
        self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ok = (w_norm > 0) & (g_norm > 0)
                    trust = torch.where(ok, group["eta"] * w_norm / g_norm.clamp_min(1e-30), torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = g.clone()
                else:
                    state["momentum"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum"], alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float, lars: bool = False, lr_scale: float = 1.0) -> list[dict]:
    """Weight decay (and, for LARS, trust-ratio adaptation) on weights only; none on BN parameters and biases.

    ``lr_scale`` multiplies the scheduled learning rate of these groups (see :func:`set_lr`).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups: list[dict] = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale},
    ]
    if lars:
        groups[0]["lars"], groups[1]["lars"] = True, False
    return groups


def scaled_lr(cfg: OptimConfig) -> float:
    """Base lr per 256 images, scaled to the batch (SimCLR: lr = 0.3 x batch / 256)."""
    ratio = cfg.batch_size / 256
    return cfg.lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[cfg.lr_scaling]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """LARS, AdamW or SGD over the model's parameter groups (no decay on biases and norms), at the scaled lr."""
    groups = param_groups(model, cfg.weight_decay, lars=cfg.name == "lars")
    lr = scaled_lr(cfg)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (times its own scale)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
