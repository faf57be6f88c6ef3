"""Figures (seaborn) from result rows."""

from __future__ import annotations

from pathlib import Path

from analysis.render import plt, save_figure, sns
from probclr.eval.results import ResultRow, rows_frame


def accuracy_vs_fraction(rows: list[ResultRow], path: Path, title: str = "") -> Path:
    """Test accuracy against label fraction (log x), one line per method / probe, mean ± sd over seeds."""
    df = rows_frame(rows)
    df["accuracy %"] = 100 * df["accuracy"]
    df["model"] = df["method"] + " / " + df["probe"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.lineplot(data=df, x="fraction", y="accuracy %", hue="model", style="model", markers=True, dashes=False,
                 errorbar="sd", ax=ax)
    ax.set_xscale("log")
    fractions = sorted(df["fraction"].unique())
    ax.set_xticks(fractions, [f"{100 * f:g} %" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("fraction of training labels used")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    save_figure(fig, Path(path), dpi=150)
    return path


def monitor_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """kNN monitor accuracy on the validation split against pretraining epoch, one line per run."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, points in curves.items():
        ax.plot([e for e, _ in points], [100 * a for _, a in points], marker="o", markersize=3, label=name)
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("kNN top-1 on validation (%)")
    ax.legend(fontsize=7)
    save_figure(fig, Path(path), dpi=150)
    return path
