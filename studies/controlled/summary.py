"""The controlled study's table (each measure's mean and 95 % t-interval over seeds, and MC-InfoNCE's paired
differences against every other method) and its figure (estimated against true kappa, one panel per method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from analysis.render import plt, save_figure
from analysis.seed_summary import t_interval

MEASURES = (
    ("spearman_kappa_true", "Spearman(certainty, κ*)"),
    ("mu_recovery", "μ: Spearman of pairwise cosines"),
    ("procrustes_r2", "μ: R² after rotation"),
    ("coverage_90", "coverage of the 90 % cap"),
    ("coverage_error", "mean |coverage − level|"),
    ("spearman_proj_norm", "Spearman(‖proj‖, κ*)"),
    ("spearman_feature_norm", "Spearman(‖h‖, κ*)"),
)
REFERENCE = "mc_infonce"
PAIRED = ("spearman_kappa_true", "mu_recovery", "coverage_error")


def _fmt(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "—"
    m, lo, hi = t_interval(v)
    return f"{m:+.3f}" if v.size < 2 else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _by(rows: list[dict[str, Any]], name: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["method"] == name and r.get(key) is not None}


def summary_table(rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    """Markdown: one line per method (mean [95 % t-interval] over seeds), then the paired differences."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    p = spec["study"]["process"]
    lines = [
        "# Controlled study: recovering known posteriors", "",
        f"Process: x in [0, 1]^{p['dim_x']}, latents on S^{p['dim_z'] - 1}, true κ* in [{p['kappa_min']:g}, "
        f"{p['kappa_max']:g}], positives at κ_pos = {p['kappa_pos']:g}; {spec['study']['steps']} steps of "
        f"{spec['study']['batch']} pairs; {spec['split']} observations ({spec['study']['eval_points']}); "
        f"seeds {', '.join(map(str, seeds))}. Mean [95 % t-interval] over seeds.", "",
        "| method | " + " | ".join(label for _, label in MEASURES) + " |",
        "|---|" + "---|" * len(MEASURES),
    ]
    for name in names:
        cells = [_fmt(list(_by(rows, name, key).values())) for key, _ in MEASURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if REFERENCE in names:
        lines += ["", f"Paired over seeds: {REFERENCE} − method (mean [95 % t-interval]).", "",
                  "| method | " + " | ".join(k for k in PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
        for name in names:
            if name == REFERENCE:
                continue
            cells = []
            for key in PAIRED:
                ref, other = _by(rows, REFERENCE, key), _by(rows, name, key)
                cells.append(_fmt([ref[s] - other[s] for s in sorted(set(ref) & set(other))]))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
