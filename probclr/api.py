"""The Python API, for notebooks and scripts: the same operations as the command line, returning objects.

    import probclr
    run = probclr.pretrain("configs/digits_demo.yaml", out="runs/nb", overrides=["optim.epochs=5"])
    table = probclr.evaluate(run, fractions=[0.1, 1.0])          # a pandas DataFrame, one row per probe/seed
    encoder = probclr.load_encoder(run)                          # nn.Module: images in [0, 1] -> h
    h = probclr.embed(encoder, images)                           # (N, D) features
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from probclr.config import Config, from_dict, load_config, merge, parse_overrides
from probclr.errors import ConfigError, ProbclrError
from probclr.eval.evaluate import evaluate_run
from probclr.eval.frozen_model import load_encoder as _checkpoint_encoder
from probclr.eval.results import rows_frame
from probclr.model.forward import as_float_rgb
from probclr.run.rundir import RunDir
from probclr.train.pretrain import pretrain as _pretrain


@dataclass(frozen=True)
class Run:
    """A run directory written by :func:`pretrain` (or ``probclr pretrain``)."""

    path: Path

    @property
    def config(self) -> Config:
        """The run's resolved configuration (its config.yaml)."""
        return load_config(RunDir(self.path).config_path)

    @property
    def checkpoint(self) -> Path:
        """The last checkpoint."""
        return RunDir(self.path).require_checkpoint()

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch: loss, lr, images/s, kappa quantiles, kNN monitor accuracy, ..."""
        lines = RunDir(self.path).metrics_path.read_text().splitlines()
        return pd.DataFrame([json.loads(line) for line in lines if line.strip()])


def _config(config: Config | dict | str | Path | None, overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        return _with_overrides(config, overrides)
    if isinstance(config, dict):
        return _with_overrides(from_dict(config), overrides)
    return load_config(config, [str(o) for o in _items(overrides, "overrides") or ()])


def _with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    return merge(cfg, parse_overrides([str(o) for o in _items(overrides, "overrides") or ()])) if overrides else cfg


def pretrain(
    config: Config | dict | str | Path | None = None, out: str | Path = "runs/pretrain", *,
    overrides: Sequence[str] = (), resume: bool = False,
) -> Run:
    """Pretrain with ``config`` (a Config, a nested dict, a YAML path, or None for the defaults) plus
    ``overrides`` ("section.key=value"), into the run directory ``out``; returns the :class:`Run`."""
    result = _pretrain(_config(config, overrides), out, resume=resume, command=["probclr.pretrain (Python API)"])
    return Run(Path(result.run_dir))


def _run_path(run: Run | str | Path) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def evaluate(
    run: Run | str | Path, fractions: Sequence[float] | None = None, *, seeds: int | None = None,
    probes: Sequence[str] | None = None, split: str = "test",
) -> pd.DataFrame:
    """Frozen-encoder evaluation at label ``fractions`` (default: the run's ``eval.fractions``); one row per
    probe, fraction and label subset, scored on ``split`` (``"val"`` for every choice, ``"test"`` to report)."""
    path = _run_path(run)
    changes = {f"eval.{k}": v for k, v in (("fractions", _items(fractions, "fractions")), ("seeds", seeds),
                                           ("probes", _items(probes, "probes"))) if v is not None}
    ev = merge(load_config(RunDir(path).config_path), changes).eval  # checked as a config is: a bad value names itself
    rows, _ = evaluate_run(path, ev, split=split, command=["probclr.evaluate (Python API)"])
    return rows_frame(rows)


def _items(value: object, what: str) -> tuple[object, ...] | None:
    """One value or a sequence of them (list, tuple, NumPy array) as a tuple; a lone string or number is one
    item, never split into characters. None stays None."""
    if value is None:
        return None
    if isinstance(value, str | int | float):
        return (value,)
    if hasattr(value, "tolist"):  # NumPy arrays and tensors
        listed = value.tolist()  # type: ignore[union-attr]
        return tuple(listed) if isinstance(listed, list) else (listed,)
    if isinstance(value, Sequence):
        return tuple(value)
    raise ConfigError(f"{what} must be a value or a list of values, got {type(value).__name__}")


def load_encoder(run_or_file: Run | str | Path) -> nn.Module:
    """The frozen encoder (eval mode; images in [0, 1], (B, 3, H, W) -> h (B, D)) of a run directory, a
    probclr checkpoint, or a TorchScript file from ``probclr export --format torchscript``."""
    path = _run_path(run_or_file)
    if path.is_dir():
        return _checkpoint_encoder(RunDir(path).require_checkpoint())
    if not path.is_file():
        raise ProbclrError(f"{str(path)!r} is neither a run directory nor a file")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError:
        return _checkpoint_encoder(path)


@torch.no_grad()
def embed(encoder: nn.Module | Run | str | Path, images: Tensor, batch_size: int = 512) -> Tensor:
    """Features h (N, D) of ``images``: uint8 in [0, 255] or float in [0, 1], (N, 1 or 3, H, W)."""
    model = encoder if isinstance(encoder, nn.Module) else load_encoder(encoder)
    model.eval()
    out = [model(as_float_rgb(chunk)).float() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)
