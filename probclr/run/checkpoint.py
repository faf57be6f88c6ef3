"""Atomic, code-free checkpoints that carry their config and provenance.

Saved with ``torch.save`` into a temporary file and renamed; loaded with ``weights_only=True``, so a
checkpoint can hold tensors and plain values only and loading one never executes code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from probclr.errors import ProbclrError
from probclr.io import atomic_torch_save, load_failure_reason, safe_torch_load

__all__ = ["CheckpointError", "load_checkpoint", "load_failure_reason", "save_checkpoint"]

FORMAT = "probclr-checkpoint-1"


class CheckpointError(ProbclrError):
    """A missing, damaged, unsafe or mismatched checkpoint."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint (tensors and plain data only), atomically, with its format number."""
    atomic_torch_save(path, {"format": FORMAT, **state})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only); a missing, damaged or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    state = safe_torch_load(path, "probclr checkpoint", error=CheckpointError)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a probclr checkpoint (format {FORMAT} expected)")
    problem = _malformed(state)
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or crafted: {problem}")
    return state


def _malformed(state: dict[str, Any]) -> str:
    """What a loadable checkpoint lacks or holds wrongly ('' when its fields are sound)."""
    model, cfg = state.get("model"), state.get("config")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        return "'model' must be a mapping of tensors"
    for key in ("encoder.mean", "encoder.std"):
        if not isinstance(model.get(key), torch.Tensor) or model[key].numel() != 3:
            return f"'model' lacks the input normalisation {key!r} (3 values)"
    if not isinstance(cfg, dict):
        return "'config' must be a mapping"
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"'epoch' must be a non-negative integer, got {str(epoch)[:40]!r}"
    planned = (cfg.get("optim") or {}).get("epochs") if isinstance(cfg.get("optim"), dict) else None
    if isinstance(planned, int) and not isinstance(planned, bool) and epoch > planned:
        return f"'epoch' {epoch} is beyond the {planned} epochs its own config plans"
    bad = next((k for k, v in model.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        return f"weights {bad!r} hold NaN or infinite values (a diverged or damaged run)"
    return ""


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (keys feature caches to the exact checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
