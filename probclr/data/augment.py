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
    """Per-image crop rectangles of a batch, in pixels."""
    x0: Tensor  # (B,) left edge, pixels
    y0: Tensor  # (B,) top edge, pixels
    w: Tensor  # (B,) crop width, pixels
    h: Tensor  # (B,) crop height, pixels


class JitterParams(NamedTuple):
    """Per-image colour-jitter factors of a batch."""
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


def _interp_matrix(start: Tensor, extent: Tensor, src: int, size: int, flip: Tensor | None) -> Tensor:
    """(B, size, src) bilinear resampling rows: output pixel j reads source coordinate
    start + (j + 0.5) * extent / size - 0.5 (align_corners=False), clamped to the image (border padding)."""
    j = torch.arange(size, device=start.device, dtype=start.dtype)  # (S,)
    if flip is not None:
        j = torch.where(flip.view(-1, 1), size - 1 - j, j)  # (B, S) mirrored rows read right to left
    u = start.view(-1, 1) + (j + 0.5) * (extent.view(-1, 1) / size) - 0.5  # (B, S)
    u = u.clamp(0, src - 1)
    lo = u.floor()
    frac = u - lo  # (B, S)
    lo_i = lo.long()
    hi_i = (lo_i + 1).clamp(max=src - 1)
    m = torch.zeros(start.shape[0], size, src, device=start.device, dtype=start.dtype)  # (B, S, src)
    m.scatter_add_(2, lo_i.unsqueeze(2), (1 - frac).unsqueeze(2))
    m.scatter_add_(2, hi_i.unsqueeze(2), frac.unsqueeze(2))
    return m


def crop_resize_flip(x: Tensor, crops: CropParams, flip: Tensor, size: int) -> Tensor:
    """Crop each box, resize bilinearly to ``size``, mirror where ``flip``. x: (B, C, H, W) float.

    Axis-aligned bilinear resampling is separable, so it is two batched matrix products with per-image
    (S, H) and (S, W) interpolation matrices -- faster than ``grid_sample`` on CPU and GPU alike.
    """
    b, c, height, width = x.shape
    ry = _interp_matrix(crops.y0.to(x.dtype), crops.h.to(x.dtype), height, size, None)  # (B, S, H)
    rx = _interp_matrix(crops.x0.to(x.dtype), crops.w.to(x.dtype), width, size, flip)  # (B, S, W)
    y = torch.bmm(x.reshape(b, c * height, width), rx.transpose(1, 2))  # (B, C*H, S) rows resampled
    y = y.view(b, c, height, size).transpose(2, 3).reshape(b, c * size, height)  # (B, C*S, H)
    z = torch.bmm(y, ry.transpose(1, 2))  # (B, C*S, S) columns resampled, still transposed
    return z.view(b, c, size, size).transpose(2, 3).contiguous()  # (B, C, S, S)


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


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """Scale every pixel of image i by f[i]: x (B, C, H, W) in [0, 1], f (B,)."""
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """Blend image i towards its mean grey level by f[i]: x (B, C, H, W) in [0, 1], f (B,)."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """Blend image i towards its greyscale version by f[i]: x (B, C, H, W) in [0, 1], f (B,)."""
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns per image, keeping V (= max) and chroma (= max - min).

    Exactly torchvision's rgb -> hsv -> rgb round trip, in closed form: channel n of the result is
    V - C * clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6 and n = 5, 3, 1 for R, G, B.
    """
    r, g, b = x.unbind(dim=1)  # each (B, H, W)
    maxc = x.amax(dim=1)
    chroma = maxc - x.amin(dim=1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h6 = torch.where(
        maxc == r, torch.remainder((g - b) / safe, 6.0), torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )  # (B, H, W) hue in sixths of a turn
    h6 = torch.remainder(h6 + 6.0 * shift.view(-1, 1, 1), 6.0)
    n = x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)  # (B, 3, H, W)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


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
    x = x.clone()
    factors = (p.brightness, p.contrast, p.saturation, p.hue)
    for step in range(4):
        for k, op in enumerate(_JITTER_OPS):
            idx = torch.nonzero(p.order[:, step] == k).squeeze(1)  # images doing op k at this step
            if idx.numel():
                x.index_copy_(0, idx, op(x.index_select(0, idx), factors[k].index_select(0, idx)))
    return x


def _yiq_hue_matrices(shift: Tensor) -> Tensor:
    """(B,) hue shifts in turns -> (B, 3, 3) RGB matrices rotating chroma about the grey axis in YIQ space."""
    to_yiq = shift.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    theta = 2 * math.pi * shift
    cos, sin = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([
        torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1), torch.stack([zero, sin, cos], 1),
    ], 1)  # (B, 3, 3)
    return torch.linalg.inv(to_yiq) @ rot @ to_yiq


def affine_color(x: Tensor, p: JitterParams, jitter: Tensor, gray: Tensor) -> Tensor:
    """Colour jitter and greyscale as ONE per-image affine colour map x -> A x + t, then a single clamp.

    Brightness, contrast and saturation are affine in the colour vector; hue is a rotation about the grey
    axis in YIQ space (NVIDIA DALI's hue; torchvision rotates the HSV hue instead); the random order is
    composed on the 3x4 maps, and contrast's grey mean is carried through exactly. It differs from the
    ``hsv`` mode only in the hue formula and in clamping once at the end instead of after each op.
    x: (B, 3, H, W); jitter, gray: (B,) bool masks.
    """
    b = x.shape[0]
    eye = torch.eye(3, device=x.device, dtype=x.dtype).expand(b, 3, 3)
    w = x.new_tensor(GRAY_WEIGHTS)  # (3,)
    ones_w = torch.ones(3, 1, device=x.device, dtype=x.dtype) * w.view(1, 3)  # (3, 3) = 1 w^T
    mu = x.mean(dim=(2, 3))  # (B, 3) mean colour of the input
    a, t = eye.clone(), torch.zeros(b, 3, device=x.device, dtype=x.dtype)  # current map: A (B,3,3), t (B,3)
    hue = _yiq_hue_matrices(p.hue.to(x.dtype))  # (B, 3, 3)
    for step in range(4):
        k = torch.where(jitter, p.order[:, step], torch.full_like(p.order[:, step], -1)).view(-1, 1, 1)
        f = lambda v: v.to(x.dtype).view(-1, 1, 1)  # noqa: E731
        bright = f(p.brightness) * eye
        sat = f(p.saturation) * eye + (1 - f(p.saturation)) * ones_w
        m = torch.where(k == 0, bright, torch.where(k == 2, sat, torch.where(k == 3, hue, eye)))  # linear ops
        grey_mean = ((a @ mu.unsqueeze(2)).squeeze(2) + t) @ w  # (B,) mean grey of the current image
        c = f(p.contrast)
        m = torch.where(k == 1, c * eye, m)
        shift = torch.where(k.view(-1, 1) == 1, ((1 - c.view(-1, 1)) * grey_mean.view(-1, 1)).expand(-1, 3), 0 * t)
        a, t = m @ a, (m @ t.unsqueeze(2)).squeeze(2) + shift
    g = gray.view(-1, 1, 1)
    a = torch.where(g, ones_w @ a, a)
    t = torch.where(g.view(-1, 1), t @ ones_w.T, t)
    y = torch.einsum("bij,bjhw->bihw", a, x) + t.view(b, 3, 1, 1)
    return y.clamp_(0, 1)


# --------------------------------------------------------------------------------------------------
# blur


def blur_kernel_size(side: int, frac: float) -> int:
    """The odd Gaussian-blur kernel size for an image side (SimCLR: 10 % of the side), at least 3."""
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
        # 2-3. colour jitter with probability jitter_p, then greyscale with probability grayscale_p
        if cfg.color_mode == "affine":
            params = sample_jitter(b, cfg.strength, gen, dev)
            jit = torch.rand(b, generator=gen, device=dev) < (cfg.jitter_p if cfg.color_jitter and cfg.strength > 0 else 0)
            gray = torch.rand(b, generator=gen, device=dev) < (cfg.grayscale_p if cfg.grayscale else 0)
            x = affine_color(x, params, jit, gray)
        elif cfg.color_jitter and cfg.strength > 0:
            params = sample_jitter(b, cfg.strength, gen, dev)
            idx = _subset(torch.rand(b, generator=gen, device=dev) < cfg.jitter_p)
            if idx.numel():
                sub = JitterParams(*(t.index_select(0, idx) for t in params))
                x = x.index_copy(0, idx, color_jitter(x.index_select(0, idx), sub))
        if cfg.color_mode == "hsv" and cfg.grayscale:
            gray = torch.rand(b, generator=gen, device=dev) < cfg.grayscale_p  # (B,)
            x = torch.where(gray.view(-1, 1, 1, 1), grayscale(x).expand(-1, 3, -1, -1), x)
        # 4. Gaussian blur, with probability blur_p per image
        if cfg.blur:
            sigma = _uniform(b, *cfg.blur_sigma, gen, dev)
            idx = _subset(torch.rand(b, generator=gen, device=dev) < cfg.blur_p)
            if idx.numel():
                k = blur_kernel_size(size, cfg.blur_kernel_frac)
                x = x.index_copy(0, idx, gaussian_blur(x.index_select(0, idx), sigma.index_select(0, idx), k))
        # 5. additive Gaussian noise, with probability noise_p per image (not in the paper; off by default)
        if cfg.noise:
            std = _uniform(b, *cfg.noise_std, gen, dev) * (torch.rand(b, generator=gen, device=dev) < cfg.noise_p)
            noise = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
            x = (x + std.to(x.dtype).view(-1, 1, 1, 1) * noise).clamp_(0, 1)
        return x.contiguous()
