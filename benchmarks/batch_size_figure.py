"""The batch-size study's figure: accuracy against batch size, one line per arm (same epochs = same images seen;
same steps), from a finished `probclr sweep` of configs/sweeps/batch_size.yaml (variants named ARM-bBATCH).

    python benchmarks/batch_size_figure.py runs/sweeps/batch_size [--split test]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from analysis.reports.render import plt, save_figure, sns
from analysis.reports.sweep_report import sweep_frame

ARMS = {"epochs4": "same epochs (4): same images seen", "samesteps": "same steps (~150): more images at larger batch"}


def batch_size_figure(sweep_dir: Path, split: str = "test") -> Path:
    """``SWEEP/report/batch_size.png``: accuracy (mean ± sd over seeds × label subsets) against batch size."""
    df, _ = sweep_frame(sweep_dir)
    df = df[(df["split"] == split) & (df["kind"] == "pretrain")].copy()
    parsed = [re.fullmatch(r"(.+?)[-_]b(\d+)", str(v)) for v in df["variant"]]
    df["arm"] = [m.group(1) if m else str(v) for m, v in zip(parsed, df["variant"], strict=True)]
    df["batch size"] = [int(m.group(2)) if m else 0 for m in parsed]
    df = df[df["batch size"] > 0]
    # batch 128 at 4 epochs is the point both arms share (the same-steps arm is defined by its ~150 steps)
    shared = df[(df["arm"] == "epochs4") & (df["batch size"] == 128)].assign(arm="samesteps")
    df = pd.concat([df, shared], ignore_index=True)
    df["arm"] = [ARMS.get(a, a) for a in df["arm"]]
    df["accuracy %"] = 100 * df["accuracy"]
    df["labels"] = [f"linear @ {100 * f:g} % labels" for f in df["fraction"]]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.lineplot(data=df, x="batch size", y="accuracy %", hue="arm", style="labels", marker="o", errorbar="sd", ax=ax)
    ax.set_xscale("log", base=2)
    sizes = sorted(df["batch size"].unique())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_title(f"batch size: {'validation' if split == 'val' else 'test'} accuracy (mean ± sd)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    return save_figure(fig, Path(sweep_dir) / "report" / "batch_size.png", dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    args = ap.parse_args()
    print(batch_size_figure(args.sweep_dir, args.split))


if __name__ == "__main__":
    main()
