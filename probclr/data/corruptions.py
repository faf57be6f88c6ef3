"""Seeded CIFAR-10-C-style corruptions and crops of a given area, as batched tensor ops.

"CIFAR-10-C-style", not CIFAR-10-C: the three corruptions below follow the definitions and the CIFAR
severity constants of Hendrycks & Dietterich (ICLR 2019, arXiv 1903.12261) -- Gaussian noise, Gaussian blur,
contrast -- re-implemented on float tensors with a seeded ``torch.Generator``, not the published images.
Severity 0 is the clean image; 1..5 the published levels, each further from the clean image than the last.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probclr.data.augment import CropParams, crop_resize_flip, gaussian_blur

# Hendrycks & Dietterich's CIFAR constants, severity 1..5
NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # additive N(0, c^2) on [0, 1] pixels
BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # Gaussian blur sigma, pixels
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # (x - mean) * c + mean, mean over the whole image
SEVERITIES = 5


def _check_severity(severity: int) -> None:
    if not 0 <= severity <= SEVERITIES:
        raise ValueError(f"severity must be an integer in 0..{SEVERITIES}, got {severity}")


def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """x: (B, C, H, W) in [0, 1]."""
    _check_severity(severity)
    if severity == 0:
        return x.clone()
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return (x + NOISE_STD[severity - 1] * noise).clamp(0, 1)


def blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Deterministic given the severity; ``gen`` is accepted for a uniform signature."""
    _check_severity(severity)
    if severity == 0:
        return x.clone()
    sigma = torch.full((x.shape[0],), BLUR_SIGMA[severity - 1], device=x.device)
    radius = min(math.ceil(3 * BLUR_SIGMA[severity - 1]), (min(x.shape[-2:]) - 1) // 2)  # reflect pad < side
    return gaussian_blur(x, sigma, 2 * radius + 1).clamp(0, 1)


def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Shrink each image towards its mean level: x (B, C, H, W) in [0, 1], CIFAR-10-C-style severity."""
    _check_severity(severity)
    if severity == 0:
        return x.clone()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * CONTRAST[severity - 1] + mean).clamp(0, 1)


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise, "gaussian_blur": blur, "contrast": contrast,
}


def corrupt(x: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (0 = clean) with its own seeded generator."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return CORRUPTIONS[name](x, severity, gen)


def crop_area(x: Tensor, area: Tensor, gen: torch.Generator) -> Tensor:
    """Square crops covering ``area`` (B,) of each image (in (0, 1]), at a random position, resized back.

    x: (B, C, H, W) float. The crop side is sqrt(area) of the image side; positions are uniform.
    """
    if area.shape != x.shape[:1]:
        raise ValueError(f"need one area per image, got {tuple(area.shape)} for {x.shape[0]} images")
    if not bool(((area > 0) & (area <= 1)).all()):
        raise ValueError(f"crop areas must lie in (0, 1], got min {float(area.min())}, max {float(area.max())}")
    b, _, height, width = x.shape
    side = area.to(x.dtype).sqrt()
    w, h = side * width, side * height
    x0 = torch.rand(b, generator=gen, device=x.device, dtype=x.dtype) * (width - w)
    y0 = torch.rand(b, generator=gen, device=x.device, dtype=x.dtype) * (height - h)
    flip = torch.zeros(b, dtype=torch.bool, device=x.device)
    return crop_resize_flip(x, CropParams(x0, y0, w, h), flip, height)


def centre_crop(x: Tensor, side: Tensor) -> Tensor:
    """Centre crops whose side is ``side`` (B,) of the image's side (in (0, 1]), resized back: the crop
    protocol of Kirchhof et al. (ICML 2023), who draw the side fraction uniformly in (0.25, 1).

    x: (B, C, H, W) float.
    """
    if side.shape != x.shape[:1]:
        raise ValueError(f"need one side fraction per image, got {tuple(side.shape)} for {x.shape[0]} images")
    if not bool(((side > 0) & (side <= 1)).all()):
        raise ValueError(f"side fractions must lie in (0, 1], got min {float(side.min())}, max {float(side.max())}")
    b, _, height, width = x.shape
    s = side.to(device=x.device, dtype=x.dtype)
    w, h = s * width, s * height  # (B,)
    flip = torch.zeros(b, dtype=torch.bool, device=x.device)
    return crop_resize_flip(x, CropParams((width - w) / 2, (height - h) / 2, w, h), flip, height)
