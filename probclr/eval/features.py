"""Frozen features, extracted once per checkpoint and cached in the run directory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from probclr.data.splits import ImageSet
from probclr.io import atomic_torch_save
from probclr.model.backbones import Encoder
from probclr.model.build import build_model
from probclr.model.forward import embed
from probclr.model.heads import SimCLRModel
from probclr.run.checkpoint import CheckpointError, file_digest, load_checkpoint, load_failure_reason
from probclr.run.rundir import RunDir, config_from_checkpoint

_FEATURES_VERSION = "2"


class Features(NamedTuple):
    """Frozen representations of the label pool and the evaluated split, with labels and the checkpoint digest."""
    train_x: Tensor  # (N_train, D) representation h of the clean label-pool images
    train_y: Tensor  # (N_train,)
    test_x: Tensor  # (N_eval, D) the evaluated split: test, or validation with --split val
    test_y: Tensor  # (N_eval,)
    checkpoint_sha256: str


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






def content_digest(*parts: ImageSet) -> str:
    """sha256 over the images, labels and shapes of image sets: what a derived cache depends on."""
    h = hashlib.sha256()
    for part in parts:
        for t in (part.images, part.labels):
            h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
            h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def cached_features(
    run_dir: Path, checkpoint: Path, train: ImageSet, evaluated: ImageSet, batch_size: int = 512,
) -> Features:
    """Features of ``checkpoint`` on the clean label-pool images and on the evaluated split (test or val),
    cached under ``run_dir/features``, keyed by the checkpoint's and the images' contents (so swapped class
    folders, another dataset of the same size or another split never reuse a stale cache)."""
    digest = file_digest(checkpoint)
    key = hashlib.sha256(f"{_FEATURES_VERSION}:{digest}:{content_digest(train, evaluated)}".encode()).hexdigest()
    path = RunDir(run_dir).features_path(key[:24])
    if path.exists():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a refusal, with its reason
            raise CheckpointError(f"refusing to load feature cache {str(path)!r} ({load_failure_reason(err)}); delete it to"
                                  " recompute") from err
        if not isinstance(d, dict) or d.get("key") != key:
            raise CheckpointError(f"feature cache {str(path)!r} does not match its checkpoint and images; delete it"
                                  " to recompute")
        return Features(d["train_x"], d["train_y"], d["test_x"], d["test_y"], digest)
    encoder = load_encoder(checkpoint)
    feats = Features(
        embed(encoder, train.images, batch_size), train.labels.clone(),
        embed(encoder, evaluated.images, batch_size), evaluated.labels.clone(), digest,
    )
    atomic_torch_save(path, {**feats._asdict(), "key": key})
    return feats
