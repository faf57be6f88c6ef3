"""Programs that run without probclr or Python training code: ``torch.export`` (.pt2) and ONNX.

Both take images in [0, 1] of shape (B, 3, H, W) with a dynamic batch dimension B, normalise inside and
return the representation h (B, D); with ``head=True`` they also return the projection head's direction
mu (B, P, unit vectors) and, for a probabilistic run (``--new-loss``), its concentration kappa (B,).

- ``export``: ``torch.export.load(FILE).module()(x)``: torch alone, no probclr class in the program.
- ``onnx``: opset :data:`ONNX_OPSET`, input ``images``, outputs ``h`` [, ``mu`` [, ``kappa``]]; any ONNX
  runtime, e.g. ``onnxruntime.InferenceSession(FILE).run(None, {"images": x})``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probclr.errors import ProbclrError
from probclr.model.heads import SimCLRModel

ONNX_OPSET = 18
MAX_BATCH = 2**16  # the dynamic batch dimension's stated upper bound


class Deployable(nn.Module):
    """Normalisation + backbone (+ the head's mu and kappa): the module every program format traces."""

    def __init__(self, model: SimCLRModel, head: bool) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.head = model.head if head else None

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        h = self.encoder(x)  # (B, D); the encoder normalises with its own mean / std
        if self.head is None:
            return h
        out = self.head(h)
        mu = F.normalize(out.proj.float(), dim=1)  # (B, P)
        return (h, mu) if out.kappa is None else (h, mu, out.kappa)  # kappa (B,)

    def output_names(self, probabilistic: bool) -> list[str]:
        return ["h"] if self.head is None else ["h", "mu", "kappa"] if probabilistic else ["h", "mu"]


def _example(image_size: int) -> tuple[Tensor, dict[str, dict[int, torch.export.Dim]]]:
    x = torch.rand(2, 3, image_size, image_size)  # (2, 3, S, S): batch 2, so the batch dimension is not specialised
    return x, {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def exported_program_bytes(module: Deployable, image_size: int) -> bytes:
    """The ``torch.export`` program of ``module`` (eval mode), serialised as a .pt2 file."""
    x, dynamic = _example(image_size)
    program = torch.export.export(module.eval(), (x,), dynamic_shapes=dynamic)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def require_onnx() -> None:
    """A one-line error naming the extra when the ONNX exporter's packages are missing."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ProbclrError(f"--format onnx needs the {' and '.join(missing)} package(s), not installed here: "
                           "pip install 'probclr[onnx]'")


def onnx_bytes(module: Deployable, image_size: int, outputs: list[str]) -> bytes:
    """The ONNX model of ``module`` (opset ONNX_OPSET, dynamic batch), serialised."""
    require_onnx()
    x, dynamic = _example(image_size)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (x,), dynamo=True, dynamic_shapes=dynamic, opset_version=ONNX_OPSET,
                                    input_names=["images"], output_names=outputs, verbose=False)
    if program is None:
        raise ProbclrError("the ONNX exporter returned no program; update torch, onnx and onnxscript")
    return program.model_proto.SerializeToString()
