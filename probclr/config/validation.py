"""Checking a configuration: one table states each numeric key's range once; every range check and its
message is generated from it. Then the few rules that relate several keys. The first violation is a
:class:`ConfigError` naming the key, its valid range and the value given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from probclr.config.schema import Config
from probclr.errors import ConfigError

BIG = 2**62  # "no practical bound": counts and sizes that only have to be finite


class Range(NamedTuple):
    """The valid values of one numeric key: [lo, hi] with either end open; ``null`` allowed if optional.
    ``items``: the key is a list and every item must lie in the range (and the list may not be empty)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    items: bool = False
    note: str = ""  # why the range is what it is, said in the message

    def holds(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def describe(self) -> str:
        if (self.lo, self.hi, self.lo_open, self.hi_open) == (0, 1, False, False) and "probability" in self.note:
            text = "a probability in [0, 1]"
        elif self.hi >= BIG:  # no practical upper bound: say only the lower one
            text = f"{'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        return text + (f" ({self.note})" if self.note and "probability" not in self.note else "") + \
            (" or null" if self.optional else "")


PROB = Range(0, 1, note="probability")
POSITIVE_COUNT = Range(1, BIG)

RANGES: dict[str, Range] = {
    # data
    "data.image_size": Range(3, 4096, optional=True), "data.train_limit": Range(1, BIG, optional=True),
    "data.test_limit": Range(1, BIG, optional=True), "data.val_size": Range(0, 10**9, optional=True),
    "data.val_seed": Range(0, 2**31, hi_open=True),
    # augment
    "augment.flip_p": PROB, "augment.jitter_p": PROB, "augment.grayscale_p": PROB, "augment.blur_p": PROB,
    "augment.noise_p": PROB, "augment.strength": Range(0, 10), "augment.blur_kernel_frac": Range(0, 1, lo_open=True),
    # model
    "model.proj_dim": Range(1, 65536), "model.proj_hidden": Range(1, 65536, optional=True),
    "model.convnet_widths": Range(1, 65536, items=True, note="channels per stage"),
    # loss
    "loss.temperature": Range(1e-4, 100), "loss.samples": Range(1, 4096), "loss.kappa_min": Range(0, 1e8, lo_open=True),
    "loss.kappa_max": Range(0, 1e8, lo_open=True), "loss.kl_weight": Range(0, 1e3), "loss.mu_fraction": Range(0, 1),
    "loss.implicit_scale": Range(1e-6, 1e6),
    # optim
    "optim.lr": Range(0, 1e3, lo_open=True), "optim.weight_decay": Range(0, 10), "optim.momentum": Range(0, 1, hi_open=True),
    "optim.lars_eta": Range(0, 1e3), "optim.warmup_epochs": Range(0, 10**6), "optim.epochs": Range(0, 10**6),
    "optim.batch_size": Range(2, 10**7, note="NT-Xent needs negatives"), "optim.skip_nonfinite": Range(0, BIG),
    "optim.grad_cache_chunk": Range(2, BIG, optional=True, note="views; batch norm needs two per chunk"),
    # run
    "run.seed": Range(0, 2**63 - 1), "run.num_threads": Range(1, 4096, optional=True), "run.log_every": POSITIVE_COUNT,
    "run.monitor_every": Range(0, 10**6, optional=True, note="epochs; null: auto"),
    "run.monitor_bank": Range(1, 1e8), "run.monitor_queries": Range(1, 1e8),
    # eval
    "eval.fractions": Range(0, 1, lo_open=True, items=True), "eval.seeds": Range(1, 1000),
    "eval.weight_decays": Range(0, 1e3, items=True), "eval.holdout": Range(0, 1, lo_open=True, hi_open=True),
    "eval.max_iter": Range(1, 100_000), "eval.probe_tol": Range(0, 1, lo_open=True, hi_open=True),
    "eval.knn_k": Range(1, 10**6), "eval.knn_max_share": Range(0, 1, lo_open=True),
    "eval.knn_temperature": Range(1e-4, 100, optional=True, note="null: fitted on the holdout"),
    "eval.mlp_hidden": Range(1, 10**5), "eval.mlp_epochs": Range(1, 10**5), "eval.batch_size": Range(1, 10**6),
    # supervised
    "supervised.steps": Range(1, 10**7), "supervised.max_epochs": Range(1, BIG), "supervised.batch_size": Range(2, 10**6),
    "supervised.lr": Range(0, 100, lo_open=True), "supervised.weight_decay": Range(0, 1), "supervised.pad": Range(0, 64),
    "supervised.finetune_lr_scale": Range(0, 100), "supervised.grid_lr": Range(0, 100, lo_open=True, items=True),
    "supervised.grid_weight_decay": Range(0, 1, items=True), "supervised.grid_steps": Range(1, 10**7, items=True),
}


def _value(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def range_errors(cfg: Config) -> Iterator[str]:
    """The message of every key of :data:`RANGES` whose value lies outside its range, in table order."""
    for key, r in RANGES.items():
        v = _value(cfg, key)
        if v is None:
            if not r.optional:
                yield f"{key} must be {r.describe()}, got null"
            continue
        if r.items:
            if len(v) == 0:
                yield f"{key} must not be empty; each item {r.describe()}"
            yield from (f"{key}[{i}] must be {r.describe()}, got {x:g}" for i, x in enumerate(v) if not r.holds(x))
        elif not r.holds(v):
            yield f"{key} must be {r.describe()}, got {v:g}"


def _pair(key: str, lo: float, hi_max: float | None = None, strict_lo: bool = True) -> Callable[[Config], str | None]:
    """A (min, max) key: lo < min (or <=) <= max (<= hi_max)."""

    def check(cfg: Config) -> str | None:
        a, b = _value(cfg, key)
        ok = (a > lo if strict_lo else a >= lo) and a <= b and (hi_max is None or b <= hi_max)
        rule = f"{lo:g} {'<' if strict_lo else '<='} min <= max" + (f" <= {hi_max:g}" if hi_max is not None else "")
        return None if ok else f"{key} must satisfy {rule}, got {[a, b]}"

    return check


def _fractions_once(cfg: Config) -> str | None:
    f = cfg.eval.fractions
    return None if len(set(f)) == len(f) else \
        f"eval.fractions gives a fraction twice ({', '.join(map(str, f))}); give each once"


def _kappa_bounds(cfg: Config) -> str | None:
    lo, hi = cfg.loss.kappa_min, cfg.loss.kappa_max
    return None if lo < hi else f"loss.kappa_min and kappa_max must satisfy 0 < min < max, got {lo}, {hi}"


def _loggers(cfg: Config) -> str | None:
    bad = [n for n in cfg.run.loggers if n not in ("jsonl", "tensorboard", "wandb")]
    return f"run.loggers items must be jsonl, tensorboard or wandb, got {str(bad[0])[:40]!r}" if bad else None


def _probes(cfg: Config) -> str | None:
    bad = [p for p in cfg.eval.probes if p not in ("linear", "mlp", "knn")]
    return f"eval.probes items must be linear, mlp or knn, got {bad[0]!r}" if bad else None


def _pairs(cfg: Config) -> str | None:
    d = cfg.data
    if d.pairs != "soft_labels" and d.soft_labels is not None:
        return (f"data.soft_labels {d.soft_labels!r} is given but data.pairs is {d.pairs}; set data.pairs=soft_labels"
                " to draw positives from it, or leave data.soft_labels out")
    if d.pairs == "soft_labels" and not d.soft_labels:
        return "data.pairs soft_labels needs data.soft_labels: a .npy of (N, C) class probabilities per training image"
    if d.pairs == "soft_labels" and d.train_limit is not None:
        return (f"data.train_limit {d.train_limit} would take a subset of the images that data.soft_labels gives one"
                " row each; leave data.train_limit out (make a smaller image folder instead)")
    return None


def _whiten(cfg: Config) -> str | None:
    m = cfg.model
    if not m.convnet_whiten:
        return None
    if m.backbone != "convnet":
        return f"model.convnet_whiten needs model.backbone convnet, got {m.backbone}; leave convnet_whiten out"
    first = m.convnet_widths[0] if m.convnet_widths else 0
    if first % 2 or first > 54:
        return (f"model.convnet_whiten needs an even first width of at most 54 (both signs of up to 27 patch"
                f" directions), got convnet_widths[0] = {first}")
    return None


RULES: tuple[Callable[[Config], str | None], ...] = (
    _pair("augment.crop_scale", 0, 1), _pair("augment.crop_ratio", 0), _pair("augment.blur_sigma", 0),
    _pair("augment.noise_std", 0, 1, strict_lo=False), _kappa_bounds, _fractions_once, _loggers, _probes, _pairs,
    _whiten,
)


def validate(cfg: Config) -> None:
    """Every range of :data:`RANGES`, then every rule relating keys; the first violation is a ConfigError."""
    for message in range_errors(cfg):
        raise ConfigError(message)
    for rule in RULES:
        message = rule(cfg)
        if message is not None:
            raise ConfigError(message)
