"""Contrastive losses, as pure functions computed in log space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent (Chen et al. 2020, Eq. 1), the mean over all 2N anchors.

    "l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)", with sim the cosine
    similarity. z_a, z_b: (N, D) projections of two views of the same N images (normalised here).
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must both have shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent needs N >= 2 pairs (one positive and negatives), got N = {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2N, D), unit norm, float32 for the softmax
    logits = z @ z.T / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # k != i
    target = torch.arange(2 * n, device=z.device).roll(n)  # (2N,) view a_i <-> view b_i
    return F.cross_entropy(logits, target)
