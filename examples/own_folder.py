"""Your own images: a folder with train/<class>/ and test/<class>/ subfolders (or class subfolders only),
pretrained, evaluated at label fractions and embedded with the Python API.

    python examples/own_folder.py PATH/TO/FOLDER [--image-size 32] [--epochs 30] [--out runs/own]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import probclr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("runs/own"))
    a = ap.parse_args()
    run = probclr.pretrain(None, out=a.out, overrides=[
        "data.dataset=imagefolder", f"data.data_dir={a.folder}", f"data.image_size={a.image_size}",
        f"optim.epochs={a.epochs}", f"optim.batch_size={a.batch_size}", "optim.name=adamw", "optim.lr=0.004",
        "optim.warmup_epochs=1", "loss.temperature=0.2", "augment.color_mode=affine",
    ])
    table = probclr.evaluate(run, fractions=[0.1, 1.0], seeds=1, probes=["linear", "knn"])
    print(table[["probe", "fraction", "n_labels", "accuracy", "ece"]].to_string(index=False))
    print(f"run directory: {run.path}; export the encoder with: probclr export --run {run.path} --format torchscript"
          " --out encoder.ts")


if __name__ == "__main__":
    main()
