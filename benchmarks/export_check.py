"""Export a run in every deployable format and compare each with probclr's own outputs on real test images:
the largest absolute difference of h (and of mu, kappa with --head), file size, export time.

    PROBCLR_DATA_DIR=../shared/data python benchmarks/export_check.py --run RUN --images 1000 [--head]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from probclr.data.sources import load_splits
from probclr.eval.export import export_encoder
from probclr.eval.frozen_model import load_model
from probclr.model.forward import as_float_rgb
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint


def probclr_outputs(run: Path, x: torch.Tensor) -> list[torch.Tensor]:
    model = load_model(run / "checkpoints" / "last.pt")
    with torch.no_grad():
        h, out = model(x)
    mu = torch.nn.functional.normalize(out.proj.float(), dim=1)
    return [h, mu] + ([out.kappa] if out.kappa is not None else [])


def deployed_outputs(fmt: str, path: Path, x: torch.Tensor, head: bool) -> list[torch.Tensor]:
    if fmt == "export":
        with torch.no_grad():
            got = torch.export.load(str(path)).module()(x)
        return list(got) if head else [got]
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a) for a in session.run(None, {"images": x.numpy()})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--head", action="store_true")
    args = ap.parse_args()
    cfg = config_from_checkpoint(load_run_checkpoint(RunDir(args.run), args.run / "checkpoints" / "last.pt"))
    images = load_splits(cfg.data).test.images[: args.images]
    x = as_float_rgb(images)  # (N, 3, H, W) in [0, 1]
    ours = probclr_outputs(args.run, x)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("export", "enc.pt2"), ("onnx", "enc.onnx"), ("safetensors", "enc.safetensors")):
            t0 = time.perf_counter()
            path = export_encoder(args.run, fmt, Path(tmp) / name, head=args.head)
            row = {"export_s": round(time.perf_counter() - t0, 2), "bytes": path.stat().st_size}
            if fmt != "safetensors":
                got = deployed_outputs(fmt, path, x, args.head)
                names = ["h", "mu", "kappa"][: len(got)]
                row |= {f"max_abs_diff_{n}": float((g - o).abs().max()) for n, g, o in zip(names, got, ours, strict=False)}
                if "kappa" in names:
                    row["max_rel_diff_kappa"] = float(((got[2] - ours[2]).abs() / ours[2]).max())
            report[fmt] = row
    print(json.dumps({"run": str(args.run), "images": int(x.shape[0]), "head": args.head, **report}, indent=1))


if __name__ == "__main__":
    main()
