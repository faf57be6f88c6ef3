"""Analysis numbers across pretraining seeds: each run (one pretraining seed) gives one value per measure,
and the summary is the mean with a 95 % t-interval over runs, the seed-level uncertainty that the issue of
record asks for (the intervals inside one run are over images only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from probclr.data.corruptions import CORRUPTIONS
from probclr.io import read_csv

LABEL_FREE = ("kappa", "feature_norm", "proj_norm")


def _frame(path: Path, what: str) -> pd.DataFrame | None:
    return read_csv(path, what, ()) if path.is_file() else None


def run_measures(analysis: Path) -> pd.DataFrame:
    """One run's analysis folder -> rows (measure, score, value): every scalar the seed summary compares."""
    rows: list[dict[str, object]] = []
    hum = _frame(analysis / "human_agreement.csv", "human agreement table")
    if hum is not None:
        for r in hum.itertuples():
            rows.append({"measure": "CIFAR-10H Spearman(certainty, -H)", "score": r.score, "value": r.rho})
            if not pd.isna(getattr(r, "auroc_not_unanimous", np.nan)):
                rows.append({"measure": "CIFAR-10H AUROC not unanimous", "score": r.score,
                             "value": r.auroc_not_unanimous})
    ret = _frame(analysis / "retrieval.csv", "retrieval table")
    if ret is not None:
        for r in ret.itertuples():
            rows.append({"measure": r.metric, "score": "" if pd.isna(r.score) else r.score, "value": r.value})
    amb = _frame(analysis / "ambiguity.csv", "ambiguity table")
    if amb is not None:
        rows += [{"measure": f"Spearman with {r.factor}", "score": r.score, "value": r.rho} for r in amb.itertuples()]
    per = _frame(analysis / "ambiguity_per_image.csv", "per-image ambiguity table")
    if per is not None:
        rows += [{"measure": f"{r.factor}: {r.statistic}", "score": r.score, "value": r.value}
                 for r in per.itertuples()]
    cal = _frame(analysis / "calibration.csv", "calibration table")
    if cal is not None:
        for (probe, fraction), d in cal.groupby(["probe", "fraction"], sort=False):
            for col in ("accuracy", "nll", "ece"):
                rows.append({"measure": f"{col} at {100 * fraction:g} % labels", "score": probe,
                             "value": float(d[col].mean())})
    return pd.DataFrame(rows, columns=["measure", "score", "value"])


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of independent values (nan bounds for fewer than two)."""
    m = float(np.mean(values))
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return m, m - half, m + half


def welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a minus mean of b and its 95 % Welch interval, for unpaired independent values (each side >= 2;
    one side may have no spread)."""
    d = float(np.mean(a) - np.mean(b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)  # squared standard errors
    if va + vb == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(0.975, df) * np.sqrt(va + vb))
    return d, d - half, d + half


def across_seeds(measures: dict[str, pd.DataFrame], group_of: dict[str, str]) -> pd.DataFrame:
    """measures: run name -> run_measures(); group_of: run name -> group (e.g. the loss). -> rows (group,
    measure, score, runs, mean, low, high), one per measure that every run of the group has."""
    long = pd.concat([df.assign(run=name, group=group_of[name]) for name, df in measures.items()], ignore_index=True)
    rows = []
    for (group, measure, score), d in long.groupby(["group", "measure", "score"], sort=False):
        m, lo, hi = t_interval(d["value"].to_numpy(dtype=np.float64))
        rows.append({"group": group, "measure": measure, "score": score, "runs": int(d["run"].nunique()),
                     "mean": m, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def lower_is_better(measure: str) -> bool:
    """Certainty should fall with corruption severity: there a more negative correlation is better."""
    return any(measure in (f"Spearman with {c}", f"{c}: mean per-image Spearman") for c in CORRUPTIONS)


def kappa_verdicts(measures: dict[str, pd.DataFrame], group_of: dict[str, str]) -> list[str]:
    """Per group with kappa, for each certainty measure: kappa against the best label-free baseline (the norms
    of the representation and of the projection; best by its mean over runs), *paired within each run*: the
    per-run difference kappa - baseline (sign-flipped where lower is better, so that > 0 favours kappa) and its
    95 % t-interval over runs. "above" when the interval lies above 0, "below" when it lies below, else
    "level with". measures, group_of: as :func:`across_seeds`."""
    long = pd.concat([df.assign(run=name, group=group_of[name]) for name, df in measures.items()], ignore_index=True)
    lines = []
    for (group, measure), d in long.groupby(["group", "measure"], sort=False):
        wide = d.pivot_table(index="run", columns="score", values="value", aggfunc="first")
        others = [s for s in LABEL_FREE[1:] if s in wide.columns]
        if "kappa" not in wide.columns or not others:
            continue
        sign = -1.0 if lower_is_better(measure) else 1.0
        best = max(others, key=lambda s: sign * float(wide[s].mean()))
        diff = (sign * (wide["kappa"] - wide[best])).dropna().to_numpy(dtype=np.float64)
        if len(diff) < 2:
            continue
        m, lo, hi = t_interval(diff)
        verdict = "above" if lo > 0 else "below" if hi < 0 else "level with"
        note = " (lower is better; the difference is sign-flipped)" if sign < 0 else ""
        lines.append(f"{group}, {measure}{note}: κ is {verdict} the best label-free baseline {best} — paired "
                     f"difference {m:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(diff)} runs (means: κ "
                     f"{float(wide['kappa'].mean()):+.3f}, {best} {float(wide[best].mean()):+.3f})")
    return lines
