"""Batched SimCLR augmentations on the training device, with independent random parameters per image.

Chen et al. 2020, App. A: "random crop (with flip and resize), color distortion, and Gaussian blur".
The whole batch is augmented at once -- crops and flips as one ``grid_sample``, colour ops as tensor
arithmetic on index subsets, blur as one grouped convolution -- driven by an explicit ``torch.Generator``.
Each op is a pure function of (images, parameters) so tests can check it against torchvision.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.config import AugmentConfig

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


class CropParams(NamedTuple):
    x0: Tensor  # (B,) left edge, pixels
    y0: Tensor  # (B,) top edge, pixels
    w: Tensor  # (B,) crop width, pixels
    h: Tensor  # (B,) crop height, pixels


class JitterParams(NamedTuple):
    brightness: Tensor  # (B,) multiplicative factor
    contrast: Tensor  # (B,) blend factor towards the mean grey level
    saturation: Tensor  # (B,) blend factor towards the greyscale image
    hue: Tensor  # (B,) hue shift, in turns (fraction of the colour wheel)
    order: Tensor  # (B, 4) a permutation of the four ops per image (torchvision randomises the order)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


# --------------------------------------------------------------------------------------------------
# random resized crop + flip


def sample_crops(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    gen: torch.Generator, device: torch.device, attempts: int = 10,
) -> CropParams:
    """torchvision's RandomResizedCrop sampling, vectorised: up to 10 tries per image, then a centre crop."""
    area = height * width
    target = area * _uniform(n * attempts, *scale, gen, device).view(n, attempts)  # (B, T)
    log_r = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen, device).view(n, attempts)
    r = torch.exp(log_r)
    w = torch.sqrt(target * r).round()  # (B, T)
    h = torch.sqrt(target / r).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, T)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # (B, 1) first valid try
    any_ok = ok.any(dim=1)  # (B,)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # fallback: the whole image, clamped to the allowed aspect ratios (torchvision's rule)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    x0 = torch.floor(torch.rand(n, generator=gen, device=device) * (width - w + 1))
    y0 = torch.floor(torch.rand(n, generator=gen, device=device) * (height - h + 1))
    x0 = torch.where(any_ok, x0, torch.full_like(x0, (width - fw) // 2))
    y0 = torch.where(any_ok, y0, torch.full_like(y0, (height - fh) // 2))
    return CropParams(x0, y0, w, h)


def crop_resize_flip(x: Tensor, crops: CropParams, flip: Tensor, size: int) -> Tensor:
    """Crop each box, resize bilinearly to ``size``, mirror where ``flip``. x: (B, C, H, W) float."""
    b, c, height, width = x.shape
    sx = crops.w / width  # (B,) half-extent of the box in normalised coordinates
    sy = crops.h / height
    tx = (2 * crops.x0 + crops.w) / width - 1  # (B,) box centre, normalised (align_corners=False)
    ty = (2 * crops.y0 + crops.h) / height - 1
    sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [b, c, size, size], align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def translate_flip(x: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """Standard supervised CIFAR augmentation: zero-pad by ``pad``, random crop back, random flip."""
    b, _, height, width = x.shape
    dx = torch.randint(-pad, pad + 1, (b,), generator=gen, device=x.device).to(x.dtype)
    dy = torch.randint(-pad, pad + 1, (b,), generator=gen, device=x.device).to(x.dtype)
    flip = torch.rand(b, generator=gen, device=x.device) < 0.5
    sx = torch.where(flip, -1.0, 1.0).to(x.dtype)
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    theta = torch.stack([torch.stack([sx, zero, 2 * dx / width], 1), torch.stack([zero, one, 2 * dy / height], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------------
# colour


def grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    w = x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=1)  # each (B, H, W)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    hr = torch.remainder((g - b) / safe, 6.0)
    hg = (b - r) / safe + 2.0
    hb = (r - g) / safe + 4.0
    h = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([torch.remainder(h, 1.0), s, maxc], dim=1)  # (B, 3, H, W)


def hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(dim=1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    table = torch.stack(
        [torch.stack(c, dim=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], dim=1
    )  # (B, 6, 3, H, W)
    idx = i.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)  # (B, 1, 3, H, W)
    return table.gather(1, idx).squeeze(1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def sample_jitter(n: int, strength: float, gen: torch.Generator, device: torch.device) -> JitterParams:
    """ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) factors (SimCLR App. A) and a random op order per image."""
    lo = max(0.0, 1 - 0.8 * strength)
    hi = 1 + 0.8 * strength
    hue = min(0.2 * strength, 0.5)
    order = torch.argsort(torch.rand(n, 4, generator=gen, device=device), dim=1)  # (B, 4)
    return JitterParams(
        _uniform(n, lo, hi, gen, device), _uniform(n, lo, hi, gen, device), _uniform(n, lo, hi, gen, device),
        _uniform(n, -hue, hue, gen, device), order,
    )


def color_jitter(x: Tensor, p: JitterParams) -> Tensor:
    """Apply the four ops to each image in its own order. x: (B, 3, H, W) in [0, 1]."""
    factors = (p.brightness, p.contrast, p.saturation, p.hue)
    for step in range(4):
        for k, op in enumerate(_JITTER_OPS):
            idx = torch.nonzero(p.order[:, step] == k).squeeze(1)  # images doing op k at this step
            if idx.numel():
                x = x.index_copy(0, idx, op(x.index_select(0, idx), factors[k].index_select(0, idx)))
    return x


# --------------------------------------------------------------------------------------------------
# blur


def blur_kernel_size(side: int, frac: float) -> int:
    k = max(3, int(round(frac * side)))
    return k if k % 2 == 1 else k + 1


def gaussian_blur(x: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """Separable Gaussian blur with one sigma per image, reflect padding. x: (B, C, H, W)."""
    b, c, height, width = x.shape
    t = torch.arange(kernel, device=x.device, dtype=x.dtype) - kernel // 2  # (K,)
    w = torch.exp(-(t**2) / (2 * sigma.to(x.dtype).view(-1, 1) ** 2))  # (B, K)
    w = (w / w.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    pad = kernel // 2
    y = F.pad(x.reshape(1, b * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, w.view(b * c, 1, 1, kernel), groups=b * c)  # horizontal
    y = F.conv2d(y, w.view(b * c, 1, kernel, 1), groups=b * c)  # vertical
    return y.view(b, c, height, width)


# --------------------------------------------------------------------------------------------------
# the SimCLR view generator


def _subset(mask: Tensor) -> Tensor:
    return torch.nonzero(mask).squeeze(1)


class SimCLRAugment:
    """uint8 (B, C, H, W) -> float (B, 3, S, S) in [0, 1], one random view per image per call."""

    def __init__(self, cfg: AugmentConfig, size: int | None = None) -> None:
        self.cfg = cfg
        self.size = size

    def __call__(self, images: Tensor, gen: torch.Generator) -> Tensor:
        cfg, dev = self.cfg, images.device
        b, _, height, width = images.shape
        size = self.size or height
        x = images.float().div_(255)  # (B, C, H, W)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # 1. random resized crop, then horizontal flip
        if cfg.crop:
            crops = sample_crops(b, height, width, cfg.crop_scale, cfg.crop_ratio, gen, dev)
        else:
            full = torch.ones(b, device=dev)
            crops = CropParams(0 * full, 0 * full, width * full, height * full)
        flip = torch.rand(b, generator=gen, device=dev) < (cfg.flip_p if cfg.flip else 0.0)
        if cfg.crop or cfg.flip or size != height:
            x = crop_resize_flip(x, crops, flip, size)  # (B, 3, S, S)
        # 2. colour jitter, with probability jitter_p per image
        if cfg.color_jitter and cfg.strength > 0:
            params = sample_jitter(b, cfg.strength, gen, dev)
            idx = _subset(torch.rand(b, generator=gen, device=dev) < cfg.jitter_p)
            if idx.numel():
                sub = JitterParams(*(t.index_select(0, idx) for t in params))
                x = x.index_copy(0, idx, color_jitter(x.index_select(0, idx), sub))
        # 3. random greyscale
        if cfg.grayscale:
            gray = torch.rand(b, generator=gen, device=dev) < cfg.grayscale_p  # (B,)
            x = torch.where(gray.view(-1, 1, 1, 1), grayscale(x).expand(-1, 3, -1, -1), x)
        # 4. Gaussian blur, with probability blur_p per image
        if cfg.blur:
            sigma = _uniform(b, *cfg.blur_sigma, gen, dev)
            idx = _subset(torch.rand(b, generator=gen, device=dev) < cfg.blur_p)
            if idx.numel():
                k = blur_kernel_size(size, cfg.blur_kernel_frac)
                x = x.index_copy(0, idx, gaussian_blur(x.index_select(0, idx), sigma.index_select(0, idx), k))
        return x.contiguous()
