"""A checkpoint's frozen model: loaded and checked against the config it carries (its frozen outputs, cached
per checkpoint and split: :mod:`probclr.eval.embeddings`)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from probclr.model.backbones import Encoder
from probclr.model.build import build_model
from probclr.model.heads import SimCLRModel
from probclr.run.checkpoint import CheckpointError, load_checkpoint
from probclr.run.rundir import config_from_checkpoint


def state_mismatch(expected: dict[str, Tensor], found: dict[str, object]) -> str:
    """What differs between a model's state dict and a checkpoint's, in one line ('' when they match)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})"
        for k, v in found.items() if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{label} {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def load_model(checkpoint: Path) -> SimCLRModel:
    """The full pretrained model (encoder and head) of a checkpoint, in eval mode, gradients off."""

    state = load_checkpoint(checkpoint)
    cfg = config_from_checkpoint(state)
    mean = state["model"]["encoder.mean"].reshape(3).clone()
    std = state["model"]["encoder.std"].reshape(3).clone()
    model = build_model(cfg, mean, std)
    problem = state_mismatch(model.state_dict(), state["model"])
    if problem:
        raise CheckpointError(f"{str(checkpoint)!r} does not hold the model its config describes: {problem}")
    model.load_state_dict(state["model"])
    model.eval()
    model.requires_grad_(False)
    return model


def load_encoder(checkpoint: Path) -> Encoder:
    """The frozen encoder of a checkpoint, in eval mode, gradients off."""
    return load_model(checkpoint).encoder  # type: ignore[return-value]
