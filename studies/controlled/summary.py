"""The controlled study's table (each measure's mean and 95 % t-interval over seeds, and MC-InfoNCE's paired
differences against every other method) and its figure (estimated against true kappa, one panel per method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from analysis.reports.controlled_report import controlled_frames
from analysis.reports.render import plt, save_figure
from analysis.reports.text import md_table


def summary_table(rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    """Markdown: one line per method (mean [95 % t-interval] over seeds), then the paired differences to
    MC-InfoNCE -- the tables `probclr report` shows for the same study (analysis.reports.controlled_report)."""
    per, paired, what = controlled_frames(rows, spec["study"], spec["split"])
    lines = ["# Controlled study: recovering known posteriors", "", what[0].upper() + what[1:] + ".", ""]
    if not per.empty:
        lines += [md_table(per), ""]
    if not paired.empty:
        lines += ["Paired over seeds, MC-InfoNCE − method:", "", md_table(paired), ""]
    return "\n".join(lines)


def kappa_figure(points: Path, rows: list[dict[str, Any]], path: Path) -> Path:
    """Estimated certainty against true κ* (log-log) on held-out observations, one panel per method, the
    lowest seed of each; the dashed diagonal is where a calibrated κ would lie."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.0 * max(len(names), 1), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        seed = min(r["seed"] for r in rows if r["method"] == name)
        data = np.load(points / f"{name}-s{seed}.npz")
        k_true, k_hat = data["kappa_true"], data["kappa_hat"]
        ax.scatter(k_true, k_hat, s=2, alpha=0.3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if name != "nt_xent_norm":  # a calibrated kappa would lie on the diagonal
            lo, hi = float(k_true.min()), float(k_true.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        rho = next(r["spearman_kappa_true"] for r in rows if r["method"] == name and r["seed"] == seed)
        ax.set_title(f"{name}\nρ = {rho:+.2f} (seed {seed})", fontsize=8)
        ax.set_xlabel("true κ*")
        ax.set_ylabel("κ̂" if name != "nt_xent_norm" else "‖proj‖")
    save_figure(fig, path, dpi=120)
    return path


def regime_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (D, scale) of the regime map."""
    lines = ["| D | κ scale | κ range (5–95 %) | mean ρ | MC − surrogate (nats) | corr of ∂/∂log κ |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dim']} | ×{r['scale']:g} | {r['kappa_low']:.0f}–{r['kappa_high']:.0f} | {r['mean_rho']:.3f} "
                     f"| {r['gap_nats']:+.3f} | {r['grad_corr']:+.2f} |")
    return "\n".join(lines) + "\n"


def regime_figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """Two heat maps over (D, kappa scale): the loss gap in nats and the log-kappa gradient correlation."""
    dims = sorted({r["dim"] for r in rows})
    scales = sorted({r["scale"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for ax, key, title, cmap in ((axes[0], "gap_nats", "MC-InfoNCE − surrogate (nats)", "coolwarm"),
                                 (axes[1], "grad_corr", "corr of ∂loss/∂log κ", "viridis")):
        grid = np.array([[next(r[key] for r in rows if r["dim"] == d and r["scale"] == s) for s in scales]
                         for d in dims])  # (D, S)
        im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
        for i in range(len(dims)):
            for j in range(len(scales)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(scales)), [f"×{s:g}" for s in scales])
        ax.set_yticks(range(len(dims)), [str(d) for d in dims])
        ax.set_xlabel("κ scale (× the true κ* in [4, 64])")
        ax.set_ylabel("D (sphere S^(D−1))")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
    save_figure(fig, path, dpi=120)
    return path
