"""Export a run's encoder for use without probclr: a torchvision state dict, or a TorchScript module.

- ``torchvision``: ``torch.load(FILE, weights_only=True)`` gives a dict with ``state_dict`` (loads with
  ``strict=True`` into ``torchvision.models.<arch>()`` after the stem changes named in ``stem``), ``mean`` and
  ``std`` (per-channel input normalisation for images in [0, 1]), ``arch``, ``stem`` and the run's
  ``provenance``. The small ConvNet has no torchvision form: export it as TorchScript.
- ``torchscript``: a scripted module taking images in [0, 1] (B, 3, H, W), normalising inside, returning h
  (B, D); ``torch.jit.load(FILE)`` alone loads it.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probclr.errors import ProbclrError
from probclr.eval.features import load_encoder
from probclr.io import atomic_write_bytes
from probclr.model.backbones import Encoder
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint

FORMATS = ("torchvision", "torchscript")
STEM_CHANGES = {  # what to change in torchvision.models.<arch>() before load_state_dict(strict=True)
    "cifar": "conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False); maxpool = nn.Identity();"
             " fc = nn.Identity()",
    "small": "conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False); fc = nn.Identity()",
    "imagenet": "fc = nn.Identity()",
}


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


def export_encoder(run_dir: Path, fmt: str, out: Path, checkpoint: Path | None = None) -> Path:
    """Write the run's encoder to ``out`` in format ``fmt`` (one of FORMATS), atomically."""
    if fmt not in FORMATS:
        raise ProbclrError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run = RunDir(run_dir)
    check_export_target(Path(out), run.root)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    model_cfg = config_from_checkpoint(load_run_checkpoint(run, ckpt)).model
    arch, stem = model_cfg.backbone, "cifar" if model_cfg.stem == "auto" else model_cfg.stem
    encoder = load_encoder(ckpt)
    buf = io.BytesIO()
    if fmt == "torchvision":
        if arch == "convnet":
            raise ProbclrError("the small ConvNet has no torchvision model to load into; use --format torchscript")
        torch.save(torchvision_payload(encoder, arch, stem, run), buf)
    else:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is what loads without probclr
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(_Scripted(encoder).eval()), buf)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)
