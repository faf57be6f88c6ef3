"""Quickstart with the Python API on the embedded digits (no download; under 2 minutes on 2 CPU cores):
pretrain, evaluate at two label fractions, load the encoder, embed three images.

    python examples/quickstart.py [--out runs/quickstart] [--epochs 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import probclr
from probclr.config import DataConfig
from probclr.data.sources import load_splits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--epochs", type=int, default=20)
    a = ap.parse_args()
    config = Path(__file__).resolve().parent.parent / "configs" / "digits_demo.yaml"
    run = probclr.pretrain(config, out=a.out, overrides=[f"optim.epochs={a.epochs}"])
    print(run.metrics[["epoch", "loss", "images_per_s"]].tail(3).to_string(index=False))

    table = probclr.evaluate(run, fractions=[0.1, 1.0], seeds=2)
    print(table.groupby(["probe", "fraction"])["accuracy"].agg(["mean", "std"]).round(3).to_string())

    encoder = probclr.load_encoder(run)  # a plain nn.Module: images in [0, 1] -> h
    images = load_splits(DataConfig(dataset="digits")).test.images[:3]  # (3, 3, 16, 16) uint8
    h = probclr.embed(encoder, images)
    print(f"three test images -> features of shape {tuple(h.shape)}")


if __name__ == "__main__":
    main()
