"""Every figure (seaborn): one run's analysis, drawn from the CSV tables in ``RUN/analysis``, and the result-row
figures of evaluations and reports (accuracy against label fraction, kNN monitor curves)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.reports.render import plt, save_figure, sns
from probclr.eval.results import ResultRow, rows_frame


def _save(fig: plt.Figure, path: Path) -> Path:
    return save_figure(fig, path, dpi=130)


def reliability_figure(rel: pd.DataFrame, path: Path) -> Path:
    """One panel per label fraction: accuracy vs confidence per bin, one line per probe, the diagonal."""
    fractions = sorted(rel["fraction"].unique())
    fig, axes = plt.subplots(1, len(fractions), figsize=(3.4 * len(fractions), 3.3), sharey=True, squeeze=False)
    for ax, f in zip(axes[0], fractions, strict=True):
        d = rel[(rel["fraction"] == f) & (rel["count"] > 0)]
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        sns.lineplot(data=d, x="confidence", y="accuracy", hue="probe", marker="o", ax=ax, legend=ax is axes[0][-1])
        ax.set_title(f"{100 * f:g} % labels")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "lower right", fontsize=7, title=None)
    return _save(fig, path)


def calibration_figure(cal: pd.DataFrame, path: Path) -> Path:
    """ECE and NLL against label fraction per probe (mean ± sd over label subsets)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    d = cal.assign(**{"ECE %": 100 * cal["ece"]})
    for ax, y in zip(axes, ["ECE %", "nll"], strict=True):
        sns.lineplot(data=d, x="fraction", y=y, hue="probe", marker="o", errorbar="sd", ax=ax, legend=ax is axes[0])
        ax.set_xscale("log")
        ax.set_xlabel("fraction of labels")
    return _save(fig, path)


def uncertainty_figure(unc: pd.DataFrame, path: Path) -> Path:
    """Misclassification AUROC of every certainty score per label fraction (0.5 = chance)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    d = unc.assign(fraction=[f"{100 * f:g} %" for f in unc["fraction"]])
    sns.barplot(data=d, x="fraction", y="auroc", hue="score", errorbar="sd", ax=ax)
    ax.axhline(0.5, color="0.4", lw=1, ls="--")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("AUROC (error detection)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), fontsize=7, title=None)
    return _save(fig, path)


def ambiguity_figure(levels: pd.DataFrame, path: Path) -> Path:
    """Mean certainty (z-scored per score, so scores share an axis) against crop area and severity."""
    d = levels.copy()
    d["z"] = d.groupby("score")["mean"].transform(lambda s: (s - s.mean()) / (s.std() if s.std() > 0 else 1.0))
    factors = list(dict.fromkeys(d["factor"]))
    fig, axes = plt.subplots(1, len(factors), figsize=(3.0 * len(factors), 3.0), squeeze=False)
    for ax, f in zip(axes[0], factors, strict=True):
        sns.lineplot(data=d[d["factor"] == f], x="level", y="z", hue="score", marker="o", ax=ax,
                     legend=ax is axes[0][-1])
        ax.set_title(f)
        ax.set_xlabel("crop area" if f == "crop area" else "severity")
        ax.set_ylabel("mean certainty (z)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7, title=None)
    return _save(fig, path)


def map_figure(maps: pd.DataFrame, path: Path) -> Path:
    """t-SNE (and UMAP) of test embeddings, coloured by class and, for --new-loss runs, by log kappa."""
    methods = list(dict.fromkeys(maps["method"]))
    cols = 2 if "kappa" in maps else 1
    fig, axes = plt.subplots(len(methods), cols, figsize=(4.6 * cols, 4.2 * len(methods)), squeeze=False)
    for row, m in zip(axes, methods, strict=True):
        d = maps[maps["method"] == m]
        order = list(dict.fromkeys(maps["class"]))
        sns.scatterplot(data=d, x="x", y="y", hue="class", hue_order=sorted(order), s=6, linewidth=0, ax=row[0],
                        palette="tab10")
        row[0].set_title(f"{m}: class")
        sns.move_legend(row[0], "upper left", bbox_to_anchor=(1, 1), fontsize=6, title=None, markerscale=2)
        if cols == 2:
            import numpy as np

            sc = row[1].scatter(d["x"], d["y"], c=np.log10(d["kappa"]), s=6, cmap="viridis", linewidths=0)
            fig.colorbar(sc, ax=row[1], label="log10 kappa")
            row[1].set_title(f"{m}: concentration")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
    return _save(fig, path)


def analysis_figures(out: Path) -> list[Path]:
    """Render every figure of an analysis folder from its tables; returns their paths."""
    sns.set_theme(style="whitegrid", context="paper")
    fig_dir = out / "figures"
    paths = [
        reliability_figure(pd.read_csv(out / "reliability.csv"), fig_dir / "reliability.png"),
        calibration_figure(pd.read_csv(out / "calibration.csv"), fig_dir / "calibration.png"),
        uncertainty_figure(pd.read_csv(out / "uncertainty.csv"), fig_dir / "uncertainty.png"),
        ambiguity_figure(pd.read_csv(out / "ambiguity_levels.csv"), fig_dir / "ambiguity.png"),
    ]
    if (out / "embedding_map.csv").is_file():  # absent when too few images were analysed for a map
        paths.append(map_figure(pd.read_csv(out / "embedding_map.csv"), fig_dir / "embedding_map.png"))
    return paths


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
