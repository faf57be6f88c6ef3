"""Projection head g(h) of SimCLR (Chen et al. 2020, Sec. 2.1: "a MLP with one hidden layer")."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HeadOutput(NamedTuple):
    """What every head returns: the projection before it is normalised and, for a probabilistic head, kappa.

    NT-Xent contrasts ``proj`` (its z); the probabilistic loss uses the direction ``mu`` and ``kappa``. The
    projection's norm is the ``proj_norm`` baseline of ``probclr analyze`` (the implicit head's kappa).
    """
    proj: Tensor  # (B, P) the unnormalised projection v
    kappa: Tensor | None = None  # (B,) concentration, larger = more certain; None for the deterministic head

    @property
    def mu(self) -> Tensor:
        """(B, P) float32 unit vectors: the mean direction v / ||v||."""
        return F.normalize(self.proj.float(), dim=1)


class ProjectionHead(nn.Module):
    """Linear -> BN -> ReLU -> Linear; the loss is computed on its output z, the probe uses h."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, h: Tensor) -> HeadOutput:
        return HeadOutput(self.net(h))  # (B, out_dim), no kappa


class SimCLRModel(nn.Module):
    """Encoder f and projection g: images -> (h, z)."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, HeadOutput]:
        h = self.encoder(x)  # (B, D)
        return h, self.head(h)  # (B, D), HeadOutput((B, P), (B,) or None)


class ProbabilisticHead(nn.Module):
    """h -> (v, kappa): a projection MLP for the direction and a scalar branch for the concentration.

    kappa is bounded on a log scale, log kappa = log k_min + (log k_max - log k_min) * sigmoid(a), so the
    loss can neither drive it to 0 nor to infinity.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int = 128, kappa_min: float = 1.0, kappa_max: float = 1e4
    ) -> None:
        super().__init__()
        if not 0 < kappa_min < kappa_max:
            raise ValueError(f"need 0 < kappa_min < kappa_max, got {kappa_min} and {kappa_max}")
        self.direction = ProjectionHead(in_dim, hidden, out_dim)
        self.concentration = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )
        self.log_min, self.log_max = math.log(kappa_min), math.log(kappa_max)

    def forward(self, h: Tensor) -> HeadOutput:
        v = self.direction(h).proj.float()  # (B, P)
        a = self.concentration(h).float().squeeze(1)  # (B,)
        kappa = torch.exp(self.log_min + (self.log_max - self.log_min) * torch.sigmoid(a))  # (B,)
        return HeadOutput(v, kappa)


class ImplicitProbabilisticHead(nn.Module):
    """h -> (mu, kappa) with the concentration implicit in the projection (Kirchhof et al. 2023, official code):
    v = g(h), mu = v / ||v||, kappa = kappa_min + scale * ||v||, clipped at kappa_max for numerical safety only.

    There is no separate branch: the likelihood decides the scale of v. For an NT-Xent model the same ||v||
    is the ``proj_norm`` baseline of ``probclr analyze``.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int = 128, kappa_min: float = 1.0, kappa_max: float = 1e4,
        scale: float = 32.0,
    ) -> None:
        super().__init__()
        if not 0 < kappa_min < kappa_max or not scale > 0:
            raise ValueError(f"need 0 < kappa_min < kappa_max and scale > 0, got {kappa_min}, {kappa_max}, {scale}")
        self.direction = ProjectionHead(in_dim, hidden, out_dim)
        self.kappa_min, self.kappa_max, self.scale = kappa_min, kappa_max, scale

    def forward(self, h: Tensor) -> HeadOutput:
        v = self.direction(h).proj.float()  # (B, P)
        kappa = (self.kappa_min + self.scale * v.norm(dim=1)).clamp_max(self.kappa_max)  # (B,)
        return HeadOutput(v, kappa)
