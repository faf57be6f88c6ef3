"""The one frozen-output concept: what a checkpoint's model gives for the clean images of one split.

:class:`Embeddings` holds the representation h (the probes' features), the direction mu, the projection's
norm before normalisation and, for a probabilistic head, the concentration kappa, with the images' labels.
They are computed once per checkpoint and split and cached in the run directory (``features/<key>.pt``,
keyed by the checkpoint's and the images' contents): ``probclr evaluate`` probes their h, ``probclr embed``
exports them (``embeddings/<checkpoint>.pt``, :class:`RunEmbeddings`), ``probclr analyze`` and the
ambiguity study read them back. For an NT-Xent run mu is the normalised projection and kappa is absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from probclr.data.encoded import EncodedImages
from probclr.data.sources import load_splits
from probclr.data.splits import ImageSet
from probclr.errors import ProbclrError
from probclr.eval.frozen_model import load_model
from probclr.io import atomic_torch_save, safe_torch_load
from probclr.model.forward import as_float_rgb
from probclr.model.heads import SimCLRModel
from probclr.run.checkpoint import CheckpointError, file_digest
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint
from probclr.run.runlock import stable_checkpoint

# the export file; 2: adds the projection's norm before normalisation ("<split>.proj_norm"); 3: h is saved as
# "<split>.h" (was "<split>.features"), one name for the representation on disk and in code
FORMAT = 3
_CACHE_VERSION = "4"  # 4: the cache's names are the export's (h, mu, proj_norm, kappa, labels)
_FIELDS = ("h", "mu", "proj_norm", "kappa", "labels")  # the export's names of the Embeddings fields


class Embeddings(NamedTuple):
    """A checkpoint's frozen outputs on the clean images of one split (N images)."""
    h: Tensor  # (N, D) float32 representation: what the probes are fitted on
    mu: Tensor  # (N, P) float32 unit direction
    proj_norm: Tensor  # (N,) norm of the projection before normalisation (a free, label-free certainty)
    kappa: Tensor | None  # (N,) concentration of a probabilistic head, larger = more certain; None for NT-Xent
    labels: Tensor  # (N,) int64 class labels; -1 for views without labels (augmented crops)

    def label_free(self) -> dict[str, Tensor]:
        """The label-free certainty scores (float64, larger = more certain): kappa if any, ||h||, ||proj||."""
        scores = {"feature_norm": self.h.double().norm(dim=1), "proj_norm": self.proj_norm.double()}
        return scores if self.kappa is None else {"kappa": self.kappa.double(), **scores}

    def take(self, idx: Tensor) -> Embeddings:
        """The embeddings of the images ``idx`` (an index or boolean mask)."""
        return Embeddings(self.h[idx], self.mu[idx], self.proj_norm[idx],
                          None if self.kappa is None else self.kappa[idx], self.labels[idx])

    def as_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """``{prefix + name: tensor}`` named as the fields; no key for an absent kappa."""
        return {f"{prefix}{k}": v for k, v in zip(_FIELDS, (self.h, self.mu, self.proj_norm, self.kappa, self.labels),
                                                   strict=True) if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, object], prefix: str = "") -> Embeddings:
        """The inverse of :meth:`as_dict`; a ValueError names a missing or malformed field."""
        found: dict[str, Tensor | None] = {}
        for name in _FIELDS:
            v = d.get(f"{prefix}{name}")
            if not (isinstance(v, Tensor) or (name == "kappa" and v is None)):
                raise ValueError(f"field {prefix}{name} is missing or not a tensor")
            found[name] = v
        h, mu, norm, kappa, labels = (found[k] for k in _FIELDS)
        assert h is not None and mu is not None and norm is not None and labels is not None
        n = h.shape[0]
        if h.ndim != 2 or mu.ndim != 2 or any(t is not None and t.shape[0] != n for t in (mu, norm, kappa, labels)):
            raise ValueError(f"fields of {prefix or 'the embeddings'} disagree in shape")
        if labels.dtype != torch.long or not all(t.is_floating_point() for t in (h, mu, norm, kappa) if t is not None):
            raise ValueError(f"fields of {prefix or 'the embeddings'} have the wrong dtypes (labels int64, the rest float)")
        return cls(h, mu, norm, kappa, labels)


@torch.no_grad()
def embed_images(model: SimCLRModel, images: Tensor, batch_size: int = 512, labels: Tensor | None = None) -> Embeddings:
    """uint8 (N, C, H, W) in [0, 255], or float in [0, 1] -> Embeddings, no augmentation, eval mode, on the
    model's device (channels-last), results on the CPU. ``labels`` (N,) default to -1 (unlabeled views)."""
    device = next(model.parameters()).device
    model.eval()
    hs, mus, norms, kappas = [], [], [], []
    for chunk in images.split(batch_size):
        x = as_float_rgb(chunk.to(device)).contiguous(memory_format=torch.channels_last)
        h, out = model(x)  # (B, D), HeadOutput
        hs.append(h.float().cpu())
        mus.append(out.mu.cpu())  # (B, P)
        norms.append(out.proj.float().norm(dim=1).cpu())  # (B,)
        if out.kappa is not None:
            kappas.append(out.kappa.float().cpu())
    n = images.shape[0]
    if not hs:
        return Embeddings(torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0), None, torch.zeros(0, dtype=torch.long))
    y = torch.full((n,), -1, dtype=torch.long) if labels is None else labels.clone()
    return Embeddings(torch.cat(hs), torch.cat(mus), torch.cat(norms), torch.cat(kappas) if kappas else None, y)


def _cache_key(digest: str, part: ImageSet) -> str:
    return hashlib.sha256(f"{_CACHE_VERSION}:{digest}:{content_digest(part)}".encode()).hexdigest()


def _load_cached(path: Path, key: str) -> Embeddings:
    d = safe_torch_load(path, "feature cache", "delete it to recompute", CheckpointError)
    if not isinstance(d, dict) or d.get("key") != key:
        raise CheckpointError(f"feature cache {str(path)!r} does not match its checkpoint and images; delete it"
                              " to recompute")
    try:
        return Embeddings.from_dict(d)
    except ValueError as err:
        raise CheckpointError(f"feature cache {str(path)!r} is damaged ({err}); delete it to recompute") from err


def cached_embeddings(
    run_dir: Path, checkpoint: Path, parts: dict[str, ImageSet], batch_size: int = 512, digest: str | None = None,
) -> dict[str, Embeddings]:
    """The Embeddings of ``checkpoint`` on each image set of ``parts``, cached under ``run_dir/features`` and
    keyed by the checkpoint's and the images' contents (swapped class folders, another dataset of the same
    size or another split never reuse a stale cache). The model is loaded only if some part is missing;
    ``digest`` is the checkpoint's sha256 when the caller has already hashed it."""
    digest = digest or file_digest(checkpoint)
    run, out, model = RunDir(run_dir), {}, None
    for name, part in parts.items():
        key = _cache_key(digest, part)
        path = run.embeddings_cache_path(key[:24])
        if path.exists():
            out[name] = _load_cached(path, key)
            continue
        model = model or load_model(checkpoint)
        out[name] = embed_images(model, part.images, batch_size, part.labels)
        atomic_torch_save(path, {**out[name].as_dict(), "key": key})
    return out


class RunEmbeddings(NamedTuple):
    """The export of ``probclr embed``: a checkpoint's Embeddings of every split (train = the label pool)."""
    checkpoint_sha256: str
    classes: list[str]
    splits: dict[str, Embeddings]  # "train", "test" and, when the run holds one, "val"

    def split(self, name: str) -> Embeddings:
        """The Embeddings of one split, or a one-line error when the export holds none."""
        if name not in self.splits:
            raise ProbclrError(f"the embeddings hold no {name} split (data.val_size 0?)")
        return self.splits[name]

    def to_file(self) -> dict[str, object]:
        """The file format: ``<split>.<field>`` tensors, classes, digest and FORMAT."""
        out: dict[str, object] = {"checkpoint_sha256": self.checkpoint_sha256, "classes": list(self.classes),
                                  "format": FORMAT}
        for name, e in self.splits.items():
            out.update(e.as_dict(f"{name}."))
        return out


def export_embeddings(run_dir: Path, checkpoint: Path | None = None, data_dir: str | None = None) -> Path:
    """Write ``run_dir/embeddings/<checkpoint>.pt`` (train.* (label pool), val.* and test.* tensors, labels,
    classes, digest) from the per-split cache."""
    run = RunDir(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    with stable_checkpoint(ckpt) as stable:  # config, weights and digest of one checkpoint
        cfg = config_from_checkpoint(load_run_checkpoint(run, stable))
        data_cfg = cfg.data if data_dir is None else dataclasses.replace(cfg.data, data_dir=data_dir)
        splits = load_splits(data_cfg)
        parts = {"train": splits.train, "test": splits.test}
        if splits.val is not None and splits.val.images.shape[0] > 0:
            parts["val"] = splits.val  # the validation split: for choices made by analyze (never test)
        digest = file_digest(stable)
        embs = cached_embeddings(run.root, stable, parts, cfg.eval.batch_size, digest)
    path = run.embeddings_path(ckpt)
    atomic_torch_save(path, RunEmbeddings(digest, list(splits.train.classes), embs).to_file())
    return path


def load_run_embeddings(run: RunDir, checkpoint: Path) -> RunEmbeddings:
    """The embeddings file of a checkpoint, refused when missing, unsafe, from another checkpoint or outdated."""
    path = run.embeddings_path(checkpoint)
    if not path.is_file():
        raise ProbclrError(
            f"run {str(run.root)!r} has no embeddings ({str(path)!r}); make them with `probclr embed --run {run.root}`"
        )
    d = safe_torch_load(path, "probclr embeddings file")
    if not isinstance(d, dict) or d.get("checkpoint_sha256") != file_digest(checkpoint):
        raise ProbclrError(f"{str(path)!r} was made from another checkpoint; re-run `probclr embed --run {run.root}`")
    if d.get("format") != FORMAT:
        raise ProbclrError(f"{str(path)!r} was made by an older probclr (format {d.get('format', 1)!r}, need"
                           f" {FORMAT}); re-run `probclr embed --run {run.root}`")
    names = [s for s in ("train", "val", "test") if f"{s}.h" in d]
    try:
        splits = {s: Embeddings.from_dict(d, f"{s}.") for s in names}
    except ValueError as err:
        raise ProbclrError(f"{str(path)!r} is damaged ({err}); re-run `probclr embed --run {run.root}`") from err
    classes = d.get("classes")
    if not isinstance(classes, list) or "train" not in splits or "test" not in splits:
        raise ProbclrError(f"{str(path)!r} is damaged (no classes, train or test); re-run `probclr embed --run {run.root}`")
    return RunEmbeddings(str(d["checkpoint_sha256"]), [str(c) for c in classes], splits)


def content_digest(*parts: ImageSet) -> str:
    """sha256 over the images, labels and shapes of image sets: what a derived cache depends on."""
    h = hashlib.sha256()
    for part in parts:
        for t in (part.images, part.labels):
            h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
            if isinstance(t, EncodedImages):  # packed files: named by their cache entry's key and rows
                h.update(b"encoded:" + t.digest())
            else:
                h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()
