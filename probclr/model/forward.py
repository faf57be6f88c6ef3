"""The frozen forward pass over clean images: uint8 or float batches in, representations out."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def as_float_rgb(chunk: Tensor) -> Tensor:
    """A batch of images, uint8 in [0, 255] or float in [0, 1], (B, 1 or 3, H, W) -> float (B, 3, H, W) in [0, 1]."""
    x = chunk.float().div(255) if chunk.dtype == torch.uint8 else chunk.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def embed(encoder: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """uint8 (N, C, H, W) -> float32 (N, D), no augmentation, eval mode."""
    device = next(encoder.parameters()).device
    out = []
    for chunk in images.split(batch_size):
        x = as_float_rgb(chunk.to(device))
        out.append(encoder(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
