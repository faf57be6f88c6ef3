"""Where pretraining metrics go besides ``metrics.jsonl`` (always written): TensorBoard and Weights & Biases.

``run.loggers: [jsonl, tensorboard, wandb]``. Per step (every ``run.log_every``): loss, lr, images/s. Per
epoch: the epoch's metrics.jsonl row (loss, kappa quantiles, kNN monitor accuracy, ...) and a histogram of
the epoch's kappas. At the end: the embedding projector of (a subset of) the test images, with labels and
thumbnails. Each logger's package is optional (``pip install 'probclr[tensorboard]'`` / ``'probclr[wandb]'``);
asking for one that is not installed is a one-line error before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from probclr.config import Config, to_dict
from probclr.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class Logger(Protocol):
    """What a training logger receives: step scalars, epoch rows with kappas, a projector of test images."""
    def step(self, values: dict[str, float], step: int) -> None: ...
    def epoch(self, row: dict[str, Any], kappas: Tensor | None) -> None: ...
    def projector(self, features: Tensor, labels: list[str], thumbnails: Tensor) -> None: ...
    def close(self) -> None: ...


WANDB_MODES = ("online", "offline", "disabled", "dryrun")


def check_loggers(cfg: Config) -> None:
    """Refuse (one line, before anything is written) a logger that cannot start: its package missing, or
    installed but not importable (a broken install, e.g. a protobuf clash), W&B in a mode it rejects, or W&B
    online with no login."""
    for name in cfg.run.loggers:
        pkg = PACKAGES.get(name)
        if pkg and importlib.util.find_spec(pkg) is None:
            raise ConfigError(f"run.loggers includes {name} but the {pkg} package is not installed;"
                              f" pip install 'probclr[{name}]' or remove it from run.loggers")
        if pkg:
            _check_importable(name, "torch.utils.tensorboard" if name == "tensorboard" else pkg)
        if name == "wandb":
            _check_wandb_mode()


def _check_importable(name: str, module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any failure of a third-party import is the same user error
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"run.loggers includes {name}, whose package is installed but cannot be imported "
                          f"({type(err).__name__}: {first}); reinstall it (pip install --force-reinstall "
                          f"'probclr[{name}]') or remove it from run.loggers") from err


def _check_wandb_mode() -> None:
    mode = os.environ.get("WANDB_MODE", "online")
    if mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={mode!r} is not a mode W&B accepts; use one of {', '.join(WANDB_MODES)}")
    if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb():
        raise ConfigError("run.loggers includes wandb, online, but no W&B login was found: run `wandb login`, "
                          "or set WANDB_MODE=offline (sync later with `wandb sync`)")


def _netrc_has_wandb() -> bool:
    """Whether ~/.netrc (or $NETRC) holds a W&B key, where `wandb login` stores it."""
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in path.read_text(errors="replace")
    except OSError:
        return False


class TensorBoardLogger:
    """Scalars, kappa histograms and an embedding projector in RUN/tensorboard."""
    def __init__(self, root: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(root / "tensorboard"))

    def step(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"step/{k}", v, step)

    def epoch(self, row: dict[str, Any], kappas: Tensor | None) -> None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, int | float):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        if kappas is not None and kappas.numel():
            self.writer.add_histogram("epoch/kappa", kappas.float().cpu(), row["epoch"])
        self.writer.flush()

    def projector(self, features: Tensor, labels: list[str], thumbnails: Tensor) -> None:
        self.writer.add_embedding(features, metadata=labels, label_img=thumbnails, tag="test_h")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """The same records in a Weights & Biases run (offline unless configured)."""
    def __init__(self, root: Path, cfg: Config, run_name: str) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE", "online")
        self.run = wandb.init(project="probclr", name=run_name, dir=str(root), config=to_dict(cfg), mode=mode,
                              resume="allow", id=_wandb_id(root))

    def step(self, values: dict[str, float], step: int) -> None:
        self.run.log({f"step/{k}": v for k, v in values.items()}, step=step)

    def epoch(self, row: dict[str, Any], kappas: Tensor | None) -> None:
        import wandb

        data: dict[str, Any] = {f"epoch/{k}": v for k, v in row.items() if isinstance(v, int | float)}
        if kappas is not None and kappas.numel():
            data["epoch/kappa"] = wandb.Histogram(kappas.float().cpu().numpy())
        self.run.log(data, step=int(row["step"]))

    def projector(self, features: Tensor, labels: list[str], thumbnails: Tensor) -> None:
        import wandb

        cols = ["label", *[f"h{i}" for i in range(features.shape[1])]]
        self.run.log({"test_h": wandb.Table(columns=cols, data=[[lab, *f.tolist()] for lab, f in zip(labels, features,
                                                                                                  strict=True)])})

    def close(self) -> None:
        self.run.finish()


def _wandb_id(root: Path) -> str:
    """One W&B run per run directory (resumes continue it): an id derived from the directory's path."""
    return hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]


class Loggers:
    """The configured loggers (jsonl is the run directory's own metrics.jsonl, written elsewhere)."""

    def __init__(self, cfg: Config, root: Path, enabled: bool = True) -> None:
        self.items: list[Logger] = []
        if not enabled:
            return
        if "tensorboard" in cfg.run.loggers:
            self.items.append(TensorBoardLogger(root))
        if "wandb" in cfg.run.loggers:
            self.items.append(WandbLogger(root, cfg, root.name))

    def step(self, values: dict[str, float], step: int) -> None:
        for logger in self.items:
            logger.step(values, step)

    def epoch(self, row: dict[str, Any], kappas: Tensor | None) -> None:
        for logger in self.items:
            logger.epoch(row, kappas)

    def projector(self, features: Tensor, labels: list[str], thumbnails: Tensor) -> None:
        for logger in self.items:
            logger.projector(features, labels, thumbnails)

    def close(self) -> None:
        for logger in self.items:
            logger.close()
