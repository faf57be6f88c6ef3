"""The layout of a run directory, which describes itself (config, command, provenance, metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probclr.config import Config, from_dict, save_config, to_dict
from probclr.errors import ProbclrError
from probclr.io import atomic_write_json, atomic_write_text


class RunDir:
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

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

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
    return from_dict(state["config"])
