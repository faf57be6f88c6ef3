"""Encoders by name: CIFAR-stem ResNets and a small ConvNet for CPU runs.

The representation is the globally average-pooled output of the last stage (SimCLR's h).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from probclr.config import ModelConfig
from probclr.data.mapped import chunks as mapped_chunks


class ConvNet(nn.Module):
    """conv3x3-BN-ReLU-maxpool per stage, widths e.g. 32-64-128-256, then global average pooling.

    ``pool_last=False`` drops the last stage's max-pool: global average pooling then reads the last stage's
    full grid (4x4 for 32 px images and four stages) instead of its 2x2 maxima. ``whiten=True`` freezes the
    first convolution, whose weights :func:`probclr.model.whitening.first_layer_whitening` gives from the training
    images' patches before training (a checkpoint carries them).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), pool_last: bool = True,
                 whiten: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if pool_last or i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = w
        self.features = nn.Sequential(*layers)
        self.whiten = whiten  # the first convolution stays frozen, also when the encoder is fine-tuned
        self.features[0].requires_grad_(not whiten)
        self.out_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))  # (B, D)


STEMS = ("cifar", "small", "imagenet")
STEM_CHANGES = {  # what to change in torchvision.models.<arch>() before load_state_dict(strict=True)
    "cifar": "conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False); maxpool = nn.Identity();"
             " fc = nn.Identity()",
    "small": "conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False); fc = nn.Identity()",
    "imagenet": "fc = nn.Identity()",
}


def stem_for(image_size: int) -> str:
    """``model.stem: auto`` by image side: CIFAR stem up to 48 px, the middle ground up to 128, ImageNet's above."""
    return "cifar" if image_size <= 48 else "small" if image_size <= 128 else "imagenet"


def resolve_stem(model: ModelConfig, image_size: int) -> ModelConfig:
    """``model.stem: auto`` made concrete from the image size, so a run's config says which stem it used."""
    if model.stem != "auto" or model.backbone == "convnet":
        return model
    return dataclasses.replace(model, stem=stem_for(image_size))


def resnet(name: str, stem: str = "cifar") -> tuple[nn.Module, int]:
    """torchvision ResNet (no fc) with one of three stems:

    - ``cifar``: 3x3 stride-1 first conv, no max-pool (SimCLR App. B.9), for 32 px images;
    - ``small``: 3x3 stride-1 first conv, then torchvision's 3x3 stride-2 max-pool: the middle ground peers
      use for 64-96 px images (STL-10, Tiny-ImageNet), one 2x down-sampling instead of ImageNet's four;
    - ``imagenet``: torchvision's own 7x7 stride-2 conv and max-pool, for 224 px images.
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}")
    import torchvision  # here, not at the top: ~2 s of import (torch._dynamo) that ConvNet runs never need

    net = getattr(torchvision.models, name)(weights=None)
    if stem in ("cifar", "small"):
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    if stem == "cifar":
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()  # type: ignore[assignment]
    return net, dim


def cifar_resnet(name: str) -> tuple[nn.Module, int]:
    """torchvision ResNet with the CIFAR stem (see :func:`resnet`)."""
    return resnet(name, "cifar")


class Encoder(nn.Module):
    """Images in [0, 1] -> representation h. Normalisation statistics travel with the weights."""

    def __init__(self, backbone: nn.Module, out_dim: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim
        self.register_buffer("mean", mean.view(1, 3, 1, 1).float())
        self.register_buffer("std", std.view(1, 3, 1, 1).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)  # (B, D)

    def trainable(self) -> Encoder:
        """Gradients on (fine-tuning a frozen encoder), except a layer the design keeps frozen: a whitening
        ConvNet's first convolution."""
        self.requires_grad_(True)
        if isinstance(self.backbone, ConvNet):
            self.backbone.features[0].requires_grad_(not self.backbone.whiten)
        return self


def channel_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of a uint8 (N, C, H, W) set, in [0, 1] units, computed in chunks of at most
    2^22 values (32 MB in int64) whatever the image size; a memory-mapped set is read chunk by chunk from
    its file (:func:`probclr.data.mapped.chunks`), so a pass over a set larger than memory stays small."""
    rows = max(1, 2**22 // max(1, images[0].numel())) if images.shape[0] else 1
    total = torch.zeros(3, dtype=torch.int64)  # integer sums are exact: the result does not depend on the
    total_sq = torch.zeros(3, dtype=torch.int64)  # order the images are stored or read in
    count = 0
    for chunk in mapped_chunks(images, rows):
        x = chunk.to(torch.int64)  # (n, C, H, W) values 0..255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        total += x.sum(dim=(0, 2, 3)).cpu()
        total_sq += (x * x).sum(dim=(0, 2, 3)).cpu()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total.double() / (255 * max(count, 1))
    std = (total_sq.double() / (255**2 * max(count, 1)) - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)


def build_encoder(cfg: ModelConfig, mean: Tensor, std: Tensor, whitening: Tensor | None = None) -> Encoder:
    """The encoder a ModelConfig names, with input normalisation by the dataset's channel statistics;
    ``whitening`` (probclr.model.whitening.first_layer_whitening) sets a whitening ConvNet's frozen first layer."""
    if cfg.backbone == "convnet":
        net: nn.Module = ConvNet(cfg.convnet_widths, cfg.convnet_pool_last, cfg.convnet_whiten)
        dim = net.out_dim  # type: ignore[assignment]
        if whitening is not None:
            with torch.no_grad():
                net.features[0].weight.copy_(whitening)  # type: ignore[index,union-attr]
    else:  # "auto" is resolved from the image size when pretraining starts; unresolved (older runs) = cifar
        net, dim = resnet(cfg.backbone, "cifar" if cfg.stem == "auto" else cfg.stem)
    return Encoder(net, int(dim), mean, std)
