"""Run configuration: one frozen dataclass per section, every default in one place.

YAML files and ``--set section.key=value`` overrides only change these defaults; an unknown key, a
wrongly typed value or an impossible one raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from probclr.errors import ConfigError
from probclr.io import atomic_write_text


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


# --------------------------------------------------------------------------------------------------
# parsing


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to ``limit`` characters: error messages never print an unbounded value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases (a billion-laughs file is refused before anything is expanded)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ConfigError("YAML aliases (*name) are not allowed in probclr configs; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice in one mapping is an error naming it and both lines (YAML's default: the last wins)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"key {shown(key, 60)} is given twice in one mapping (lines {seen[key]} and {line});"
                                  " give it once")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)


def safe_yaml(text: str, what: str) -> Any:
    """Parse YAML text with no aliases and bounded nesting; errors are one line naming ``what``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError as err:
        raise ConfigError(f"{what} is nested too deeply to be a config") from err
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {err}".splitlines()[0][:300]) from err


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is Literal:
        if value not in args:
            hint = " (YAML reads an unquoted yes / no / on / off as a boolean: quote it)" if isinstance(value, bool) \
                and any(isinstance(a, str) for a in args) else ""
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {shown(value)}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {shown(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown(value)}")
        if abs(value) >= 2**62:
            raise ConfigError(f"{key} must be an integer below 2^62 in size, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {shown(value)}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key} must be a finite number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in data if k not in names), key=str)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{str(unknown[0])[:60]}{_near(unknown[0], names)}; valid keys"
                          f" here: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(key, value, tp)
    return cls(**kwargs)


def _near(key: object, names: Any) -> str:
    """' (did you mean batch_size?)' for a key that differs from a real one only by case or '-' / '_'."""
    norm = str(key).casefold().replace("-", "_")
    same = [n for n in names if n.casefold() == norm]
    return f" (did you mean {same[0]}?)" if same else ""


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-YAML form (tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key must look like section.key, got {dotted!r}")
    section, key = parts
    if section not in tree:
        raise ConfigError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(tree)}")
    if key not in tree[section]:
        valid = ", ".join(tree[section])
        raise ConfigError(f"unknown config key {dotted}{_near(key, tree[section])}; valid keys in {section}: {valid}")
    tree[section][key] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.5'`` -> ``('optim.lr', 0.5)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override must look like section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    value = safe_yaml(raw, f"the value of {shown(key.strip(), 60)}") if raw.strip() else None
    return key.strip(), value


def merge(base: Config, updates: dict[str, Any]) -> Config:
    """Apply ``{'section.key': value}`` updates to ``base`` and validate the result."""
    tree = to_dict(base)
    for dotted, value in updates.items():
        _set_path(tree, dotted, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (empty file = {}); errors name the file and what is wrong."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a folder, not a YAML file (see {hint})")
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist (see {hint})")
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} is not a regular file (see {hint})")
    try:
        text = p.read_bytes()[: (1 << 20) + 1].decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte {err.start})") from err
    if len(text) > 1 << 20:
        raise ConfigError(f"{what} {str(p)!r} is larger than 1 MiB; not a config")
    loaded = safe_yaml(text, f"{what} {str(p)!r}") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(p)!r} must be a mapping")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``--set`` overrides; validated."""
    tree = read_yaml_mapping(path, "config file", "configs/ for examples") if path is not None else {}
    cfg = _build(Config, tree, "")
    return merge(cfg, parse_overrides(overrides or []))


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Several ``--set`` overrides; one key given two different values is an error (which one wins would be a
    silent guess)."""
    updates: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        if key in updates and updates[key] != value:  # the same value twice is no ambiguity
            raise ConfigError(f"--set {key} is given twice ({shown(updates[key], 40)} and {shown(value, 40)}); give it once")
        updates[key] = value
    return updates


def from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested mapping (YAML); unknown keys and bad values are ConfigErrors."""
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _prob(key: str, p: float) -> None:
    _check(0.0 <= p <= 1.0, f"{key} must be a probability in [0, 1], got {p}")


def _ranges(cfg: Config) -> None:
    """Every numeric field in a finite range (values that pass type checks but would crash or hang later)."""
    m, r, e, o, s = cfg.model, cfg.run, cfg.eval, cfg.optim, cfg.supervised
    checks: list[tuple[str, float, float, float]] = [
        ("run.seed", r.seed, 0, 2**63 - 1), ("model.proj_dim", m.proj_dim, 1, 65536),
        ("optim.warmup_epochs", o.warmup_epochs, 0, 10**6), ("optim.epochs", o.epochs, 0, 10**6),
        ("optim.batch_size", o.batch_size, 2, 10**7), ("optim.lr", o.lr, 0, 1e3),
        ("optim.weight_decay", o.weight_decay, 0, 10),
        ("loss.temperature", cfg.loss.temperature, 1e-4, 100), ("loss.samples", cfg.loss.samples, 1, 4096),
        ("loss.kappa_max", cfg.loss.kappa_max, 0, 1e8), ("loss.kl_weight", cfg.loss.kl_weight, 0, 1e3),
        ("loss.mu_fraction", cfg.loss.mu_fraction, 0, 1), ("loss.implicit_scale", cfg.loss.implicit_scale, 1e-6, 1e6),
        ("eval.batch_size", e.batch_size, 1, 10**6), ("eval.mlp_hidden", e.mlp_hidden, 1, 10**5),
        ("eval.mlp_epochs", e.mlp_epochs, 1, 10**5), ("eval.knn_k", e.knn_k, 1, 10**6), ("eval.seeds", e.seeds, 1, 1000),
        ("supervised.finetune_lr_scale", s.finetune_lr_scale, 0, 100), ("supervised.lr", s.lr, 0, 100),
        ("supervised.weight_decay", s.weight_decay, 0, 1), ("supervised.steps", s.steps, 1, 10**7),
        ("supervised.batch_size", s.batch_size, 2, 10**6), ("supervised.pad", s.pad, 0, 64),
        ("augment.strength", cfg.augment.strength, 0, 10),
    ]
    if r.num_threads is not None:
        checks.append(("run.num_threads", r.num_threads, 1, 4096))
    if cfg.data.image_size is not None:
        checks.append(("data.image_size", cfg.data.image_size, 3, 4096))
    if m.proj_hidden is not None:
        checks.append(("model.proj_hidden", m.proj_hidden, 1, 65536))
    checks += [(f"model.convnet_widths[{i}]", w, 1, 65536) for i, w in enumerate(m.convnet_widths)]
    checks += [(f"eval.weight_decays[{i}]", w, 0, 1e3) for i, w in enumerate(e.weight_decays)]
    for key, value, lo, hi in checks:
        _check(lo <= value <= hi, f"{key} must be in [{lo:g}, {hi:g}], got {value:g}")


def validate(cfg: Config) -> None:
    """Check every cross-field and range constraint of a Config; the first violation is a ConfigError naming the key."""
    a, o, e = cfg.augment, cfg.optim, cfg.eval
    lo, hi = a.crop_scale
    _check(0 < lo <= hi <= 1, f"augment.crop_scale must satisfy 0 < min <= max <= 1, got {list(a.crop_scale)}")
    lo, hi = a.crop_ratio
    _check(0 < lo <= hi, f"augment.crop_ratio must satisfy 0 < min <= max, got {list(a.crop_ratio)}")
    for key in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "noise_p"):
        _prob(f"augment.{key}", getattr(a, key))
    _check(a.strength >= 0, f"augment.strength must be >= 0, got {a.strength}")
    lo, hi = a.blur_sigma
    _check(0 < lo <= hi, f"augment.blur_sigma must satisfy 0 < min <= max, got {list(a.blur_sigma)}")
    _check(0 < a.blur_kernel_frac <= 1, f"augment.blur_kernel_frac must be in (0, 1], got {a.blur_kernel_frac}")
    lo, hi = a.noise_std
    _check(0 <= lo <= hi <= 1, f"augment.noise_std must satisfy 0 <= min <= max <= 1, got {list(a.noise_std)}")
    for key in ("train_limit", "test_limit", "image_size"):
        v = getattr(cfg.data, key)
        _check(v is None or v >= 1, f"data.{key} must be >= 1, got {v}")
    _check(cfg.model.proj_dim >= 1, f"model.proj_dim must be >= 1, got {cfg.model.proj_dim}")
    _check(
        len(cfg.model.convnet_widths) >= 1 and min(cfg.model.convnet_widths) >= 1,
        f"model.convnet_widths must be positive channel counts, got {list(cfg.model.convnet_widths)}",
    )
    if cfg.model.proj_hidden is not None:
        _check(cfg.model.proj_hidden >= 1, f"model.proj_hidden must be >= 1, got {cfg.model.proj_hidden}")
    _check(cfg.loss.samples >= 1, f"loss.samples must be >= 1, got {cfg.loss.samples}")
    _check(cfg.optim.grad_cache_chunk is None or cfg.optim.grad_cache_chunk >= 2,
           f"optim.grad_cache_chunk must be >= 2 views (batch norm needs two per chunk) or null, "
           f"got {cfg.optim.grad_cache_chunk}")
    _check(cfg.loss.kl_weight >= 0, f"loss.kl_weight must be >= 0, got {cfg.loss.kl_weight}")
    _check(0 < cfg.loss.kappa_min < cfg.loss.kappa_max,
           f"loss.kappa_min and kappa_max must satisfy 0 < min < max, got {cfg.loss.kappa_min}, {cfg.loss.kappa_max}")
    _check(cfg.loss.temperature > 0, f"loss.temperature must be > 0, got {cfg.loss.temperature}")
    _check(o.batch_size >= 2, f"optim.batch_size must be >= 2 (NT-Xent needs negatives), got {o.batch_size}")
    _check(o.epochs >= 0, f"optim.epochs must be >= 0, got {o.epochs}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _check(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    _check(o.skip_nonfinite >= 0, f"optim.skip_nonfinite must be >= 0, got {o.skip_nonfinite}")
    if cfg.run.num_threads is not None:
        _check(cfg.run.num_threads >= 1, f"run.num_threads must be >= 1, got {cfg.run.num_threads}")
    _check(cfg.run.log_every >= 1, f"run.log_every must be >= 1, got {cfg.run.log_every}")
    _check(cfg.run.monitor_every is None or 0 <= cfg.run.monitor_every <= 10**6,
           f"run.monitor_every must be >= 0 epochs (or null: auto), got {cfg.run.monitor_every}")
    for name in cfg.run.loggers:
        _check(name in ("jsonl", "tensorboard", "wandb"),
               f"run.loggers items must be jsonl, tensorboard or wandb, got {str(name)[:40]!r}")
    for key in ("monitor_bank", "monitor_queries"):
        v = getattr(cfg.run, key)
        _check(1 <= v <= 10**8, f"run.{key} must be in [1, 1e8], got {v}")
    _check(len(e.fractions) >= 1, "eval.fractions must not be empty")
    for f in e.fractions:
        _check(0 < f <= 1, f"eval.fractions must lie in (0, 1], got {f}")
    _check(len(set(e.fractions)) == len(e.fractions),
           f"eval.fractions gives a fraction twice ({', '.join(map(str, e.fractions))}); give each once")
    _check(e.seeds >= 1, f"eval.seeds must be >= 1, got {e.seeds}")
    for p in e.probes:
        _check(p in ("linear", "mlp", "knn"), f"eval.probes items must be linear, mlp or knn, got {p!r}")
    _check(0 < e.holdout < 1, f"eval.holdout must be in (0, 1), got {e.holdout}")
    _check(e.knn_k >= 1, f"eval.knn_k must be >= 1, got {e.knn_k}")
    _check(e.knn_temperature is None or 1e-4 <= e.knn_temperature <= 100,
           f"eval.knn_temperature must be in [1e-4, 100] (or null: fitted on the holdout), got {e.knn_temperature}")
    _check(0 < e.knn_max_share <= 1, f"eval.knn_max_share must be in (0, 1], got {e.knn_max_share}")
    _check(1 <= e.max_iter <= 100_000, f"eval.max_iter must be in [1, 100000], got {e.max_iter}")
    _check(0 < e.probe_tol < 1, f"eval.probe_tol must be in (0, 1), got {e.probe_tol}")
    d = cfg.data
    _check(d.pairs == "soft_labels" or d.soft_labels is None,
           f"data.soft_labels {d.soft_labels!r} is given but data.pairs is {d.pairs}; set data.pairs=soft_labels"
           " to draw positives from it, or leave data.soft_labels out")
    _check(d.pairs != "soft_labels" or bool(d.soft_labels),
           "data.pairs soft_labels needs data.soft_labels: a .npy of (N, C) class probabilities per training image")
    _check(d.pairs != "soft_labels" or d.train_limit is None,
           f"data.train_limit {d.train_limit} would take a subset of the images that data.soft_labels gives one row"
           " each; leave data.train_limit out (make a smaller image folder instead)")
    _check(d.val_size is None or 0 <= d.val_size <= 10**9,
           f"data.val_size must be >= 0 (or null: the default), got {d.val_size}")
    _check(0 <= d.val_seed < 2**31, f"data.val_seed must be in [0, 2^31), got {d.val_seed}")
    _check(all(w >= 0 for w in e.weight_decays) and len(e.weight_decays) > 0,
           f"eval.weight_decays must be non-negative and non-empty, got {list(e.weight_decays)}")
    s = cfg.supervised
    _check(s.max_epochs >= 1, f"supervised.max_epochs must be >= 1, got {s.max_epochs}")
    _check(s.steps >= 1, f"supervised.steps must be >= 1, got {s.steps}")
    _check(s.batch_size >= 2, f"supervised.batch_size must be >= 2, got {s.batch_size}")
    _check(s.lr > 0, f"supervised.lr must be > 0, got {s.lr}")
    _check(s.pad >= 0, f"supervised.pad must be >= 0, got {s.pad}")
    _check(len(s.grid_lr) > 0 and all(0 < v <= 100 for v in s.grid_lr),
           f"supervised.grid_lr must be non-empty values in (0, 100], got {list(s.grid_lr)}")
    _check(len(s.grid_weight_decay) > 0 and all(0 <= v <= 1 for v in s.grid_weight_decay),
           f"supervised.grid_weight_decay must be non-empty values in [0, 1], got {list(s.grid_weight_decay)}")
    _check(len(s.grid_steps) > 0 and all(1 <= v <= 10**7 for v in s.grid_steps),
           f"supervised.grid_steps must be non-empty values in [1, 1e7], got {list(s.grid_steps)}")
    _ranges(cfg)


def save_config(cfg: Config, path: Path) -> None:
    """Write a Config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


class _FieldPath:
    """Records the attribute path a selector reads (``c.optim.batch_size`` -> ("optim", "batch_size"))."""

    def __init__(self, parts: tuple[str, ...] = ()) -> None:
        self.parts = parts

    def __getattr__(self, name: str) -> _FieldPath:
        return _FieldPath((*self.parts, name))


def field_key(select: Callable[[Config], object]) -> str:
    """The dotted key of the config field a selector reads: ``field_key(lambda c: c.optim.batch_size)`` is
    ``"optim.batch_size"``. Command-line flags name their field this way, so a reader (and an editor's
    go-to-definition) can follow a flag to its field; a key that is not a field is a ConfigError."""
    path = select(_FieldPath())  # type: ignore[arg-type]
    if not isinstance(path, _FieldPath) or len(path.parts) != 2:
        raise ConfigError("a flag must select one field of one config section, like lambda c: c.optim.epochs")
    section, key = path.parts
    sections = {f.name for f in dataclasses.fields(Config)}
    if section not in sections or key not in {f.name for f in dataclasses.fields(getattr(Config(), section))}:
        raise ConfigError(f"no config field {section}.{key}")
    return f"{section}.{key}"


def flag_updates(flags: list[tuple[Callable[[Config], object], object]]) -> dict[str, Any]:
    """``{field_key(select): value}`` for the flags that were given (value not None)."""
    return {field_key(select): value for select, value in flags if value is not None}
