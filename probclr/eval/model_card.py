"""safetensors weights with a model card beside them: what anyone needs to use the encoder without probclr.

``FILE.safetensors`` holds the backbone's weights under the names of its own module (a torchvision ResNet
after the card's ``stem_changes``, or the small ConvNet whose layers the card lists) and, with ``--head``,
the projection head's under ``head.``. ``FILE.model_card.json`` (and a readable ``FILE.model_card.md``)
gives the architecture, input size, per-channel mean / std, the training config, the run's validation
accuracy at each evaluated label fraction, what kappa means for a ``--new-loss`` run, and the probclr
version and git sha that made it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

from torch import Tensor

from probclr.config import Config
from probclr.errors import ProbclrError
from probclr.io import read_json
from probclr.model.backbones import STEM_CHANGES
from probclr.model.heads import SimCLRModel
from probclr.provenance import versions
from probclr.run.rundir import RunDir

IMAGE_SIZE = {"digits": 16, "cifar10": 32, "stl10": 96}  # the side each built-in dataset is trained at
KAPPA_MEANING = {
    "mc_infonce": "kappa is the concentration of the embedding's {posterior} distribution on the unit sphere (mean "
                  "direction mu): larger = more certain. Trained by MC-InfoNCE (Kirchhof et al. 2023), it ranks "
                  "images by the ambiguity of their positives; its absolute scale is not calibrated "
                  "(docs/controlled.md).",
    "shrinkage": "kappa is a learned per-view inverse temperature (the deterministic baseline of --new-loss, no "
                 "sampling): larger = more certain; a ranking, not a calibrated scale.",
}


def image_size_of(cfg: Config, given: int | None) -> int:
    """The input side the encoder was trained at: ``--image-size``, else the dataset's, else data.image_size."""
    if given is not None and not 3 <= given <= 4096:
        raise ProbclrError(f"--image-size must be a side in pixels from 3 to 4096, got {given}")
    size = given or IMAGE_SIZE.get(cfg.data.dataset) or cfg.data.image_size
    if size is None:
        raise ProbclrError("this run read an image folder at its native size; give --image-size (the side, in "
                           "pixels, of the images it was trained on)")
    return int(size)


def convnet_layers(widths: tuple[int, ...], pool_last: bool = True) -> list[str]:
    """The small ConvNet as a list of torch layers, in state-dict order (``features.<i>``)."""
    layers, prev = [], 3
    for i, w in enumerate(widths):
        layers += [f"Conv2d({prev}, {w}, 3, padding=1, bias=False)", f"BatchNorm2d({w})", "ReLU()"]
        if pool_last or i < len(widths) - 1:
            layers.append("MaxPool2d(2)")
        prev = w
    return layers


def architecture(cfg: Config) -> dict[str, Any]:
    """How to build the backbone the weights load into: torchvision model + stem changes, or the ConvNet's layers."""
    m = cfg.model
    if m.backbone == "convnet":
        card = {"backbone": "convnet", "features": convnet_layers(tuple(m.convnet_widths), m.convnet_pool_last),
                "forward": "h = features(x).mean(dim=(2, 3))", "feature_dim": int(m.convnet_widths[-1])}
        if m.convnet_whiten:
            card["frozen"] = "features.0: a whitening of the training images' 3x3 patches, not trained"
        return card
    stem = "cifar" if m.stem == "auto" else m.stem
    return {"backbone": m.backbone, "torchvision": f"torchvision.models.{m.backbone}(weights=None)",
            "stem": stem, "stem_changes": STEM_CHANGES[stem], "forward": "h = net(x)"}


def validation_accuracy(run: RunDir, ckpt: Path) -> dict[str, Any]:
    """Mean validation accuracy per probe and label fraction from the run's own evaluation, if it made one."""
    path = run.eval_dir(ckpt, "val") / "results.json"
    if not path.is_file():
        return {"note": f"not evaluated on validation: probclr evaluate --run RUN --split val (checkpoint {ckpt.name})"}
    summary = read_json(path, "validation results").get("summary", [])
    return {f"{r['probe']} @ {100 * r['fraction']:g} % labels": round(float(r["accuracy_mean"]), 4)
            for r in summary if r.get("method") != "random"}


def card(run: RunDir, ckpt: Path, cfg: Config, model: SimCLRModel, size: int, head: bool,
         provenance: dict[str, Any]) -> dict[str, Any]:
    """The model card's facts, as a JSON-able dict."""
    enc = model.encoder
    out: dict[str, Any] = {
        "format": "safetensors", "probclr_version": versions().get("probclr"), "git_sha": provenance.get("git_sha"),
        "trained_with": provenance.get("versions"),
        "checkpoint": ckpt.name, "architecture": architecture(cfg),
        "input": {"shape": ["B", 3, size, size], "range": "[0, 1] RGB floats",
                  "mean": [round(float(v), 6) for v in enc.mean.flatten()],
                  "std": [round(float(v), 6) for v in enc.std.flatten()],
                  "normalise": "x = (images - mean) / std per channel, before the backbone"},
        "training": {"method": "SimCLR" if cfg.loss.name == "nt_xent" else cfg.loss.name,
                     "data": dataclasses.asdict(cfg.data), "config": dataclasses.asdict(cfg),
                     "command": provenance.get("command")},
        "validation_accuracy": validation_accuracy(run, ckpt),
        "head": None,
    }
    if head:
        prob = cfg.loss.name != "nt_xent"
        out["head"] = {"weights": "keys prefixed head.", "outputs": "mu = normalize(proj)" + (", kappa" if prob else ""),
                       "kappa": ({"meaning": KAPPA_MEANING[cfg.loss.name].format(posterior=cfg.loss.posterior),
                                  "range": [cfg.loss.kappa_min, cfg.loss.kappa_max],
                                  "kind": cfg.loss.kappa_head} if prob else None)}
    return out


def card_markdown(c: dict[str, Any]) -> str:
    """The card as a short README for people."""
    arch = c["architecture"]
    lines = [f"# {arch['backbone']} encoder (probclr {c['probclr_version']}, git {c['git_sha']})", "",
             f"- Input: {c['input']['shape']}, {c['input']['range']}; {c['input']['normalise']}",
             f"  with mean {c['input']['mean']} and std {c['input']['std']}.",
             f"- Architecture: {json.dumps({k: v for k, v in arch.items() if k != 'backbone'})}",
             f"- Trained: {c['training']['method']} on {c['training']['data']['dataset']}"
             f" ({c['training']['command']}).",
             f"- Validation accuracy: {json.dumps(c['validation_accuracy'])}"]
    if c["head"] and c["head"]["kappa"]:
        lines.append(f"- kappa in {c['head']['kappa']['range']}: {c['head']['kappa']['meaning']}")
    return "\n".join(lines) + "\n"


def safetensors_bytes(model: SimCLRModel, head: bool, metadata: dict[str, str]) -> bytes:
    """The backbone's (and with ``head`` the head's, prefixed ``head.``) weights as a safetensors file."""
    if importlib.util.find_spec("safetensors") is None:
        raise ProbclrError("--format safetensors needs the safetensors package, not installed here: "
                           "pip install 'probclr[safetensors]'")
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {k: v.detach().clone().contiguous()
                                  for k, v in model.encoder.backbone.state_dict().items()}
    if head:
        tensors |= {f"head.{k}": v.detach().clone().contiguous() for k, v in model.head.state_dict().items()}
    return save(tensors, metadata=metadata)
