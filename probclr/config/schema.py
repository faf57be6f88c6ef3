"""The configuration's schema: one frozen dataclass per section, every default and its meaning in one place.

YAML files and ``--set section.key=value`` overrides only change these defaults (probclr.config.reading);
every value is checked against one table (probclr.config.validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, how it is decoded, limited and split (validation size and seed)."""
    dataset: Literal["digits", "cifar10", "stl10", "imagefolder"] = "digits"  # digits ships with sklearn
    data_dir: str | None = None  # default: $PROBCLR_DATA_DIR/<dataset-specific folder>
    download: bool = False  # let torchvision download cifar10 / stl10 when missing
    image_size: int | None = None  # imagefolder only: resize (shorter side) + centre crop to this
    cache_dir: str | None = None  # decoded uint8 tensors; default $PROBCLR_CACHE_DIR or ~/.cache/probclr
    train_limit: int | None = None  # use a seeded random subset of this many training images (quick runs)
    test_limit: int | None = None  # ... and of this many test images
    # labeled training images held out of the label pool to choose every hyper-parameter on (never the test
    # set); None = 5,000 on CIFAR-10, 10 % of the labeled training set otherwise; 0 = none. Stratified.
    val_size: int | None = None
    val_seed: int = 0  # which images form the validation split
    # where the uint8 pretraining images live while training reads batches (probclr.residency): auto, device,
    # host (pinned memory, per-batch copies), stream (memory-mapped .npy in the cache folder) or encoded (image
    # folders only: the files' bytes packed in the cache folder, decoded per batch; on CUDA by nvJPEG)
    residency: Literal["auto", "device", "host", "stream", "encoded"] = "auto"
    # where a pretraining image's positive comes from (probclr.data.pairs): augment = a second augmentation of
    # the same image (SimCLR); soft_labels = another image drawn by the soft labels in data.soft_labels (a class
    # from the anchor's distribution, a partner by its probability of that class), negatives label-aware
    pairs: Literal["augment", "soft_labels"] = "augment"
    soft_labels: str | None = None  # .npy (N, C): one row of class probabilities per training image, sorted order


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR augmentations (Chen et al. 2020, App. A). Probabilities per image."""

    crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)  # fraction of the image area
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)  # aspect ratio w/h
    flip: bool = True
    flip_p: float = 0.5
    color_jitter: bool = True
    strength: float = 0.5  # s; SimCLR uses 0.5 on CIFAR-10 (App. B.9), 1.0 on ImageNet
    jitter_p: float = 0.8
    # hsv: torchvision's ops exactly (HSV hue, clamp after each op); affine: all colour ops folded into one
    # per-image affine map with a YIQ hue rotation (DALI's hue), ~3x faster on CPU. See docs/augmentation.md.
    color_mode: Literal["hsv", "affine"] = "hsv"
    grayscale: bool = True
    grayscale_p: float = 0.2
    blur: bool = False  # off on CIFAR-10 as in the paper (App. B.9); on for STL-10 / ImageNet
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels, at the output size
    blur_kernel_frac: float = 0.1  # kernel side = 10% of the image side (rounded to odd)
    # additive Gaussian pixel noise, N(0, sigma^2) with sigma ~ U(noise_std) per image, then clamp to [0, 1].
    # Not in the SimCLR recipe; it gives the probabilistic head a reason to lower kappa on noisy inputs
    # (docs/probabilistic_loss.md). Off by default.
    noise: bool = False
    noise_p: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.1)  # on [0, 1] pixels


@dataclass(frozen=True)
class ModelConfig:
    """The encoder (ConvNet or ResNet, its stem) and the projection head's widths."""
    backbone: Literal["convnet", "resnet18", "resnet50"] = "convnet"
    convnet_widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage of the small ConvNet
    convnet_pool_last: bool = True  # max-pool after the ConvNet's last stage too (False: average its full grid)
    # the ConvNet's first convolution frozen as a whitening of the training images' 3x3 patches (label-free;
    # probclr.model.whitening): its width convnet_widths[0] must be even and at most 54
    convnet_whiten: bool = False
    proj_hidden: int | None = None  # hidden width of the projection MLP; None = feature dimension
    proj_dim: int = 128  # SimCLR: 128-d projection output
    # ResNet stem (probclr.model.backbones.resnet): auto = by image size when pretraining starts (<= 48 px cifar,
    # <= 128 px small, else imagenet), recorded resolved in the run's config
    stem: Literal["auto", "cifar", "small", "imagenet"] = "auto"


@dataclass(frozen=True)
class LossConfig:
    """NT-Xent or the probabilistic MCInfoNCE (--new-loss): temperature, draws, kappa bounds, KL weight."""
    # mc_infonce: the probabilistic loss (--new-loss); shrinkage: its deterministic baseline (kappa as a learned
    # per-view temperature, no sampling; losses.shrinkage_nt_xent_global)
    name: Literal["nt_xent", "mc_infonce", "shrinkage"] = "nt_xent"
    temperature: float = 0.5  # tau; SimCLR uses 0.5 on CIFAR-10 (App. B.9)
    samples: int = 8  # mc_infonce: Monte-Carlo draws of every embedding per step
    kappa_min: float = 1.0  # mc_infonce: bounds of the head's concentration
    kappa_max: float = 1.0e4
    kl_weight: float = 0.0  # mc_infonce: beta of the KL(q || uniform) bottleneck; 0 = plain MCInfoNCE
    # mc_infonce / shrinkage: where kappa comes from. mlp: a separate branch, log kappa bounded in [kappa_min,
    # kappa_max]; implicit: the anchor's kappa = ||v||, the norm of the unnormalised projection v (mu = v / ||v||),
    # times implicit_scale, plus kappa_min, clipped at kappa_max (heads.ImplicitProbabilisticHead). The scale
    # sets kappa at initialisation (||v|| ~ 5 for the CPU ConvNet: kappa ~ 160, near the mlp branch's 100); with
    # scale 1, kappa ~ 5 on S^127 makes every draw nearly uniform and the loss starts flat at chance
    kappa_head: Literal["mlp", "implicit"] = "mlp"
    implicit_scale: float = 32.0
    # joint: mu and kappa trained together; two phases: kappa detached for the first mu_fraction of the epochs,
    # then mu detached (mu_then_kappa: only kappa's path is trained) or nothing (mu_then_joint: the official
    # MCInfoNCE code's second phase, which trains the whole model on the full loss)
    phases: Literal["joint", "mu_then_kappa", "mu_then_joint"] = "joint"
    mu_fraction: float = 0.5
    # mc_infonce: the family of each view's embedding distribution: Power Spherical (rejection-free) or von
    # Mises-Fisher (Wood's sampler, implicit reparameterisation in kappa); the KL term uses the same family
    posterior: Literal["power_spherical", "vmf"] = "power_spherical"


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, learning rate and its batch scaling, weight decay, batch size, epochs, warm-up."""
    name: Literal["lars", "adamw", "sgd"] = "lars"
    lr: float = 0.3  # base learning rate per 256 images (SimCLR: 0.3 x batch/256 with LARS)
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # how lr grows with batch size
    weight_decay: float = 1e-6  # SimCLR: 1e-6 with LARS; not applied to BN and bias
    momentum: float = 0.9
    lars_eta: float = 0.001  # LARS trust coefficient (You et al. 2017)
    warmup_epochs: float = 10.0  # linear warm-up, then cosine decay to 0 (per step)
    batch_size: int = 256
    epochs: int = 100
    skip_nonfinite: int = 0  # skip (and count) up to this many steps whose loss is NaN/inf; 0 = stop at the first
    grad_cache_chunk: int | None = None  # views per chunk: full-batch NT-Xent gradient in less memory (gradcache.py)


@dataclass(frozen=True)
class RunConfig:
    """How a run executes: seed, device, threads, precision, compile, DDP, loggers, kNN monitor."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = None  # CPU threads for torch; None = torch's default
    amp: bool = True  # bf16 autocast where native (CUDA, or a CPU with AVX512-BF16/AMX); loss in float32
    channels_last: bool = True  # NHWC activations (faster convolutions on CUDA and on x86 CPUs)
    compile: bool = False  # torch.compile the model
    keep_checkpoints: bool = False  # keep one checkpoint per epoch (for the epochs study)
    sync_bn: bool = False  # with several processes (torchrun): SyncBatchNorm, the paper's global BN
    log_every: int = 10  # steps between progress callbacks
    # kNN top-1 on the validation split every N epochs (probclr.monitor); None = every epoch on real datasets,
    # off for the digits demo; 0 = off. Bank and query counts bound its cost.
    monitor_every: int | None = None
    monitor_bank: int = 5000
    monitor_queries: int = 1000
    loggers: tuple[str, ...] = ("jsonl",)  # also tensorboard, wandb (optional extras); jsonl is always written


@dataclass(frozen=True)
class EvalConfig:
    """Label fractions, label-subset seeds, probes and their settings (weight decays, holdout, kNN)."""
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: int = 3  # label subsets per fraction (mean +- std over them)
    probes: tuple[str, ...] = ("linear", "knn")  # any of linear, mlp, knn
    weight_decays: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)  # linear-probe grid, chosen on held-out
    holdout: float = 0.2  # share of the labeled subset held out to choose weight decay
    max_iter: int = 2000  # cap on the linear probe's L-BFGS iterations; it stops at probe_tol (recorded)
    probe_tol: float = 1e-7  # ... when the largest gradient entry of its objective is below this
    knn_k: int = 20  # neighbours, at most knn_max_share of the labeled bank
    knn_max_share: float = 0.1
    knn_temperature: float | None = None  # vote weighting exp(sim / T) (Wu et al. 2018); None = fit on holdout NLL
    mlp_hidden: int = 512
    mlp_epochs: int = 100
    batch_size: int = 512  # feature extraction batch


@dataclass(frozen=True)
class SupervisedConfig:
    """Supervised baseline and fine-tuning: the same encoder, crop + flip, trained with labels."""

    steps: int = 2000  # optimiser steps at every fraction (the same compute budget for each) ...
    max_epochs: int = 200  # ... but at most this many passes over a small labeled subset
    batch_size: int = 256
    lr: float = 0.1  # SGD with momentum 0.9, nesterov, cosine decay; per 256 images
    weight_decay: float = 5e-4
    pad: int = 4  # random crop with this zero padding, then horizontal flip
    finetune_lr_scale: float = 0.1  # encoder lr multiplier when fine-tuning a pretrained encoder
    # `probclr supervised --tune`: lr x weight_decay x steps chosen per fraction on the validation split
    grid_lr: tuple[float, ...] = (0.05, 0.1, 0.2)
    grid_weight_decay: tuple[float, ...] = (5e-4, 5e-3)
    grid_steps: tuple[int, ...] = (2000,)


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run, one frozen section per concern."""
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
