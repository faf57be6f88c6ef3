"""Embedding export: representation h, direction mu and concentration kappa of clean train and test images.

What the uncertainty analysis consumes. For an NT-Xent run, mu is the normalised projection and kappa is
absent; for a ``--new-loss`` run, (mu, kappa) are the probabilistic head's outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.data.sources import load_splits
from probclr.eval.features import load_model
from probclr.io import atomic_torch_save
from probclr.model.forward import as_float_rgb
from probclr.model.heads import Embedding, SimCLRModel
from probclr.run.checkpoint import file_digest
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint
from probclr.run.runlock import stable_checkpoint

FORMAT = 2  # 2: adds the projection's norm before normalisation ("<split>.proj_norm")


def projection_norm(model: SimCLRModel, h: Tensor, out: Tensor | Embedding) -> Tensor:
    """The norm of the projection before it is normalised onto the sphere (B,): a free, label-free certainty
    baseline. For the probabilistic head, the norm of its direction branch's output."""
    if isinstance(out, Embedding):
        return model.head.direction(h).float().norm(dim=1)  # type: ignore[union-attr, operator]
    return out.float().norm(dim=1)


@torch.no_grad()
def embed_images(model: SimCLRModel, images: Tensor, batch_size: int = 512) -> dict[str, Tensor]:
    """uint8 (N, C, H, W), or float in [0, 1] -> {'features': (N, D), 'mu': (N, P), 'proj_norm': (N,),
    'kappa': (N,) if probabilistic}."""
    feats, mus, norms, kappas = [], [], [], []
    model.eval()
    for chunk in images.split(batch_size):
        h, out = model(as_float_rgb(chunk))
        feats.append(h.float())
        norms.append(projection_norm(model, h, out))
        if isinstance(out, Embedding):
            mus.append(out.mu)
            kappas.append(out.kappa)
        else:
            mus.append(F.normalize(out.float(), dim=1))
    result = {"features": torch.cat(feats), "mu": torch.cat(mus), "proj_norm": torch.cat(norms)}
    if kappas:
        result["kappa"] = torch.cat(kappas)
    return result


def export_embeddings(run_dir: Path, checkpoint: Path | None = None, data_dir: str | None = None) -> Path:
    """Write ``run_dir/embeddings/<checkpoint>.pt`` (train.* (label pool), val.* and test.* tensors, labels,
    classes, digest)."""
    run = RunDir(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    with stable_checkpoint(ckpt) as stable:  # config, weights and digest of one checkpoint
        cfg = config_from_checkpoint(load_run_checkpoint(run, stable))
        model = load_model(stable)
        digest = file_digest(stable)
    data_cfg = cfg.data if data_dir is None else dataclasses.replace(cfg.data, data_dir=data_dir)
    splits = load_splits(data_cfg)
    out: dict[str, object] = {"checkpoint_sha256": digest, "classes": list(splits.train.classes), "format": FORMAT}
    parts = [("train", splits.train), ("test", splits.test)]
    if splits.val is not None and splits.val.images.shape[0] > 0:
        parts.append(("val", splits.val))  # the validation split: for choices made by analyze (never test)
    for name, part in parts:
        for key, value in embed_images(model, part.images, cfg.eval.batch_size).items():
            out[f"{name}.{key}"] = value
        out[f"{name}.labels"] = part.labels.clone()
    path = run.embeddings_path(ckpt)
    atomic_torch_save(path, out)
    return path
