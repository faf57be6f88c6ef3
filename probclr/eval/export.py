"""Export a run's encoder for use without probclr, in one of :data:`FORMATS`.

- ``export`` (the default and the recommended format for any encoder): a ``torch.export`` program (.pt2),
  ``torch.export.load(FILE).module()`` alone loads it; dynamic batch (:mod:`probclr.eval.deployable`).
- ``onnx``: the same program as ONNX (opset 18, dynamic batch), for any ONNX runtime.
- ``safetensors``: the weights, with a model card beside them (:mod:`probclr.eval.model_card`).
With ``head=True`` these three also carry the projection head: mu, and kappa for a ``--new-loss`` run.

- ``torchvision``: ``torch.load(FILE, weights_only=True)`` gives a dict with ``state_dict`` (loads with
  ``strict=True`` into ``torchvision.models.<arch>()`` after the stem changes named in ``stem``), ``mean`` and
  ``std`` (per-channel input normalisation for images in [0, 1]), ``arch``, ``stem`` and the run's
  ``provenance``. The small ConvNet has no torchvision form: export it as TorchScript.
- ``torchscript``: a scripted module taking images in [0, 1] (B, 3, H, W), normalising inside, returning h
  (B, D); ``torch.jit.load(FILE)`` alone loads it. TorchScript is deprecated upstream: kept for older consumers.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probclr.config import Config
from probclr.errors import ProbclrError
from probclr.eval.deployable import Deployable, exported_program_bytes, onnx_bytes
from probclr.eval.frozen_model import load_model
from probclr.eval.model_card import card, card_markdown, image_size_of, safetensors_bytes
from probclr.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from probclr.model.backbones import STEM_CHANGES, Encoder
from probclr.model.heads import SimCLRModel
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint

FORMATS = ("export", "onnx", "safetensors", "torchvision", "torchscript")
WITH_HEAD = ("export", "onnx", "safetensors")  # the formats that can carry the projection head


class _Scripted(nn.Module):
    """Normalisation + backbone, in a form ``torch.jit.script`` accepts."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.backbone = encoder.backbone
        self.register_buffer("mean", encoder.mean.clone())
        self.register_buffer("std", encoder.std.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)  # (B, D)


def run_provenance(run: RunDir) -> dict[str, Any]:
    """The run's provenance.json (command, git sha, versions), or {} when it has none."""
    try:
        return dict(json.loads(run.provenance_path.read_text()))
    except (OSError, ValueError):
        return {}


def torchvision_payload(encoder: Encoder, arch: str, stem: str, run: RunDir) -> dict[str, Any]:
    """The weights-only dict of a ResNet encoder, with the stem changes and normalisation it needs."""
    state = {k: v.detach().clone() for k, v in encoder.backbone.state_dict().items()}  # fc is Identity: no keys
    return {"state_dict": state, "mean": encoder.mean.flatten().clone(), "std": encoder.std.flatten().clone(),
            "arch": arch, "stem": STEM_CHANGES[stem], "stem_name": stem, "provenance": json.dumps(run_provenance(run))}


def check_export_target(out: Path, run_root: Path) -> None:
    """Refuse an ``--out`` that export would wrongly replace: a symlink, anything but a regular file (a FIFO, a
    device, a folder), or a file of the run directory itself (its checkpoint, its config)."""
    if out.is_symlink():
        raise ProbclrError(f"--out {str(out)!r} is a symbolic link; export writes a new regular file, give its path")
    if out.exists() and not out.is_file():
        raise ProbclrError(f"--out {str(out)!r} exists and is not a regular file (a folder, FIFO or device); "
                           "give a file path")
    root = run_root.resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise ProbclrError(f"--out {str(out)!r} lies inside the run directory {str(run_root)!r}, whose files it "
                           "could replace; export to a path outside the run")


def card_paths(out: Path) -> tuple[Path, Path]:
    """Where the model card of a safetensors export goes: ``<out>.model_card.json`` and ``.md`` beside it."""
    return out.with_name(out.name + ".model_card.json"), out.with_name(out.name + ".model_card.md")


def export_encoder(run_dir: Path, fmt: str, out: Path, checkpoint: Path | None = None, head: bool = False,
                   image_size: int | None = None) -> Path:
    """Write the run's encoder (and with ``head`` its projection head) to ``out`` in format ``fmt``, atomically."""
    if fmt not in FORMATS:
        raise ProbclrError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if head and fmt not in WITH_HEAD:
        raise ProbclrError(f"--head needs --format {' | '.join(WITH_HEAD)}; {fmt} carries the encoder only")
    run, out = RunDir(run_dir), Path(out)
    check_export_target(out, run.root)
    if fmt == "safetensors":
        for extra in card_paths(out):
            check_export_target(extra, run.root)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    cfg = config_from_checkpoint(load_run_checkpoint(run, ckpt))
    model = load_model(ckpt)
    if fmt in WITH_HEAD:
        _write_deployable(run, ckpt, cfg, model, fmt, out, head, image_size)
    else:
        atomic_write_bytes(out, _legacy_bytes(run, cfg, model.encoder, fmt))  # type: ignore[arg-type]
    return out


def _write_deployable(run: RunDir, ckpt: Path, cfg: Config, model: SimCLRModel, fmt: str, out: Path, head: bool,
                      image_size: int | None) -> None:
    size = image_size_of(cfg, image_size)
    module = Deployable(model, head)
    outputs = module.output_names(cfg.loss.name != "nt_xent")
    if fmt == "export":
        atomic_write_bytes(out, exported_program_bytes(module, size))
    elif fmt == "onnx":
        atomic_write_bytes(out, onnx_bytes(module, size, outputs))
    else:
        facts = card(run, ckpt, cfg, model, size, head, run_provenance(run))
        json_path, md_path = card_paths(out)
        meta = {"format": "pt", "probclr_card": json.dumps(facts)}
        atomic_write_bytes(out, safetensors_bytes(model, head, meta))
        atomic_write_json(json_path, facts)
        atomic_write_text(md_path, card_markdown(facts))


def _legacy_bytes(run: RunDir, cfg: Config, encoder: Encoder, fmt: str) -> bytes:
    """torchvision state dict or TorchScript: the encoder alone."""
    arch, stem = cfg.model.backbone, "cifar" if cfg.model.stem == "auto" else cfg.model.stem
    buf = io.BytesIO()
    if fmt == "torchvision":
        if arch == "convnet":
            raise ProbclrError("the small ConvNet has no torchvision model to load into; use --format export "
                               "(or safetensors with its model card, or torchscript)")
        torch.save(torchvision_payload(encoder, arch, stem, run), buf)
    else:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is what older consumers load
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(_Scripted(encoder).eval()), buf)
    return buf.getvalue()
