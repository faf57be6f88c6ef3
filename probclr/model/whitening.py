"""A frozen whitening first layer for the small ConvNet, set from the training images' patches (label-free).

The idea comes from the CIFAR-10 speed-run networks (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single
GPU", 2024, arXiv:2404.00498, and tysam-code's hlb-CIFAR10 before it): the first convolution's filters are the
principal directions of the images' k x k patches, each divided by the square root of its variance (plus eps),
so that its outputs are decorrelated and of unit variance; each direction is used with both signs, so that the
ReLU after the batch norm passes either. The layer is not trained. Here the ConvNet's own first 3 x 3
convolution takes these weights (no extra layer, the same step cost); ``model.convnet_whiten`` turns it on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.config import ModelConfig

WHITEN_IMAGES = 2000  # images whose patches estimate the covariance (1.8 M patches of 32 px images for 27 x 27
# values), evenly spaced over the canonical order
WHITEN_EPS = 5e-4  # added to every eigenvalue: the weakest directions are not amplified without bound


def patch_moments(x: Tensor, kernel: int, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Mean (P,) and covariance (P, P) of every kernel x kernel patch (P = C k^2) of x (N, C, H, W), float64,
    accumulated over chunks of images."""
    p = x.shape[1] * kernel * kernel
    total, outer, count = torch.zeros(p, dtype=torch.float64), torch.zeros(p, p, dtype=torch.float64), 0
    for start in range(0, x.shape[0], chunk):
        cols = F.unfold(x[start:start + chunk].double(), kernel)  # (n, P, L) one column per patch position
        total += cols.sum(dim=(0, 2))
        outer += torch.bmm(cols, cols.transpose(1, 2)).sum(dim=0)  # (P, P) summed over images and positions
        count += cols.shape[0] * cols.shape[2]
    mean = total / count  # (P,)
    return mean, outer / count - torch.outer(mean, mean)


def whitening_filters(x: Tensor, filters: int, kernel: int = 3, eps: float = WHITEN_EPS) -> Tensor:
    """(filters, C, k, k) weights from normalised images x (N, C, H, W): the filters / 2 patch directions of
    largest variance, each scaled by 1 / sqrt(variance + eps), then the same with the opposite sign."""
    c = x.shape[1]
    if filters % 2 or filters > 2 * c * kernel * kernel:
        raise ValueError(f"a whitening layer has an even number of filters, at most {2 * c * kernel * kernel};"
                         f" got {filters}")
    _, cov = patch_moments(x, kernel)
    values, vectors = torch.linalg.eigh(cov)  # ascending; vectors (P, P), one direction per column
    top = torch.arange(cov.shape[0] - 1, cov.shape[0] - 1 - filters // 2, -1)  # the largest first
    w = (vectors[:, top] / (values[top].clamp_min(0) + eps).sqrt()).T  # (filters / 2, P)
    w = w.reshape(-1, c, kernel, kernel)  # unfold's order: channel, then row, then column
    return torch.cat([w, -w]).float()  # (filters, C, k, k)


def whitening_sample(images: Tensor, rows: Tensor | None, count: int = WHITEN_IMAGES) -> Tensor:
    """Up to ``count`` uint8 images evenly spaced over the canonical order (``rows``: the stored row of each
    canonical image, for a store in another order), so the sample is the same whatever the residency."""
    n = images.shape[0]
    picks = torch.linspace(0, n - 1, min(n, count)).round().long()  # (m,)
    return images[rows[picks] if rows is not None else picks]  # (m, C, H, W)


def first_layer_whitening(
    cfg: ModelConfig, images: Tensor, rows: Tensor | None, mean: Tensor, std: Tensor,
) -> Tensor | None:
    """The frozen first layer's weights (widths[0], C, 3, 3) that ``model.convnet_whiten`` asks for, from uint8
    images (N, C, H, W) normalised by the encoder's channel statistics mean, std (C,); None when it is off."""
    if not (cfg.backbone == "convnet" and cfg.convnet_whiten):
        return None
    sample = whitening_sample(images, rows).float().div(255)  # (m, C, H, W) in [0, 1]
    if sample.shape[1] == 1:
        sample = sample.expand(-1, 3, -1, -1)  # grey images enter the encoder as three equal channels
    x = (sample - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # (m, 3, H, W)
    return whitening_filters(x, cfg.convnet_widths[0])
