"""Projection head g(h) of SimCLR (Chen et al. 2020, Sec. 2.1: "a MLP with one hidden layer")."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Linear -> BN -> ReLU -> Linear; the loss is computed on its output z, the probe uses h."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (B, out_dim)


class SimCLRModel(nn.Module):
    """Encoder f and projection g: images -> (h, z)."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)  # (B, D)
        return h, self.head(h)  # (B, D), (B, P)
