"""The layout of a run directory, which describes itself (config, command, provenance, metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probclr.config import Config, from_dict, load_config, save_config, to_dict
from probclr.errors import ProbclrError
from probclr.io import atomic_write_json, atomic_write_text
from probclr.run.checkpoint import CheckpointError, load_checkpoint


class RunDir:
    """The layout of a run directory: config, checkpoints, metrics, evaluation and analysis paths."""
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def provenance_path(self) -> Path:
        return self.root / "provenance.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.root / "checkpoints" / f"epoch_{epoch:04d}.pt"

    def embeddings_cache_path(self, key: str) -> Path:
        """The cached embeddings of one split under ``key`` (checkpoint and image contents)."""
        return self.root / "embeddings" / "cache" / f"{key}.pt"

    def embeddings_path(self, checkpoint: Path) -> Path:
        """The embeddings (h, mu, kappa, projection norm) of a checkpoint, from `probclr embed`."""
        return self.root / "embeddings" / f"{checkpoint.stem}.pt"

    def eval_dir(self, checkpoint: Path, split: str = "test") -> Path:
        """Where `probclr evaluate` writes the results of a checkpoint (a ``val`` subfolder for validation)."""
        base = self.root / "eval" / checkpoint.stem
        return base if split == "test" else base / split

    def results_path(self, checkpoint_stem: str = "last") -> Path:
        """The test results of a checkpoint (its presence marks a finished evaluation)."""
        return self.root / "eval" / checkpoint_stem / "results.json"

    def analysis_dir(self, split: str = "test") -> Path:
        """Where `probclr analyze` writes (``analysis-val`` for the validation split)."""
        return self.root / ("analysis" if split == "test" else f"analysis-{split}")

    def write_header(self, cfg: Config, provenance: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config_path)
        atomic_write_json(self.provenance_path, provenance)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def require_checkpoint(self) -> Path:
        if not self.root.is_dir():
            raise ProbclrError(f"run directory {str(self.root)!r} does not exist")
        if not self.last.is_file():
            raise ProbclrError(
                f"run directory {str(self.root)!r} holds no checkpoint (expected {str(self.last)!r});"
                " run `probclr pretrain --out` there first"
            )
        return self.last


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    da, db = to_dict(a), to_dict(b)
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db.get(s, {}).get(k)]


def config_from_checkpoint(state: dict[str, Any]) -> Config:
    """The validated Config stored in a checkpoint."""
    return from_dict(state["config"])


# What makes a checkpoint belong to a run: the data it saw, the model, and how it was trained. Runtime keys
# (device, threads, logging, data paths) and the evaluation sections may differ without changing the weights.
_IDENTITY = ("model.", "loss.", "augment.", "optim.", "run.seed", "data.dataset", "data.train_limit",
             "data.test_limit", "data.image_size")


# What may change when a run is resumed: where things are, how it is watched and evaluated; not what it computes.
_RUNTIME = ("data.data_dir", "data.cache_dir", "data.download", "run.device", "run.num_threads", "run.log_every",
            "run.loggers", "run.monitor_every", "run.monitor_bank", "run.monitor_queries", "run.keep_checkpoints",
            "eval.", "supervised.", "data.val_size", "data.val_seed", "data.residency")


def resume_diff(saved: Config, now: Config) -> list[str]:
    """Keys on which a resumed run's config may not differ from the one it was started with."""
    return [k for k in config_diff(saved, now) if not k.startswith(_RUNTIME)]


def identity_diff(a: Config, b: Config) -> list[str]:
    """The keys that define a pretrained model (not runtime or evaluation settings) on which two configs differ."""
    return [k for k in config_diff(a, b) if k.startswith(_IDENTITY)]


def load_run_checkpoint(run: RunDir, checkpoint: Path) -> dict[str, Any]:
    """Load ``checkpoint`` for use in ``run``; refuse one made by another model or config, naming what differs.

    A run directory's config.yaml describes the model its checkpoints hold; a checkpoint whose own config
    differs in a model-defining key (say, one copied from another run) is refused instead of silently
    writing its results into this run.
    """
    state = load_checkpoint(checkpoint)
    if run.config_path.is_file():
        own = load_config(run.config_path)
        diff = identity_diff(own, config_from_checkpoint(state))
        if diff:
            da, db = to_dict(own), to_dict(config_from_checkpoint(state))
            shown = []
            for key in diff[:4]:
                sec, name = key.split(".", 1)
                shown.append(f"{key} {db.get(sec, {}).get(name)!r} (run: {da[sec][name]!r})")
            more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
            raise CheckpointError(
                f"checkpoint {str(checkpoint)!r} is not from run {str(run.root)!r}: it differs in "
                f"{', '.join(shown)}{more}; evaluate it in its own run directory"
            )
    return state
