"""Device choice and thread settings."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from probclr.config import RunConfig
from probclr.errors import ConfigError


def resolve_device(cfg: RunConfig) -> torch.device:
    """The torch device a run asks for (auto = CUDA when available); sets CPU threads; one-line error without CUDA."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is cuda but no CUDA device is available; use --device cpu or auto")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded torch.Generator on the device (the shuffle and the augmentations draw from it)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matmuls/convolutions run natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast where it is native and enabled; the loss is still computed in float32."""
    if enabled and bf16_native(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
