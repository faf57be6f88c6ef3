"""The controlled study (``probclr controlled``) in a report: each method's measures over seeds (mean and 95 %
t-interval) and the paired differences of MC-InfoNCE to every other method, read from the study's
results.json; its figure of estimated against true kappa."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.measures.seed_summary import t_interval
from probclr.io import read_json

MEASURES = ("spearman_kappa_true", "mu_recovery", "procrustes_r2", "coverage_90", "coverage_error",
            "spearman_proj_norm", "spearman_feature_norm")
PAIRED = ("spearman_kappa_true", "mu_recovery", "coverage_error")
REFERENCE = "mc_infonce"


def is_controlled_study(path: Path) -> bool:
    """Whether ``path`` is a ``probclr controlled`` directory with results."""
    return (path / "study.json").is_file() and (path / "results.json").is_file()


def _cell(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "—"
    m, lo, hi = t_interval(values)
    return f"{m:+.3f}" if values.size < 2 else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def controlled_tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(per-method table, paired-difference table, one-line description) of the study in ``path``."""
    res = read_json(path / "results.json", "controlled-study results")
    return controlled_frames(res.get("rows", []), res.get("study", {}), str(res.get("split", "?")))


def controlled_frames(rows_in: list[dict[str, Any]], study: dict[str, Any], split: str
                      ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The same three from the study's rows, its settings and its split (``probclr controlled`` writes its
    table.md from them too)."""
    rows = pd.DataFrame(rows_in)
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame(), "no finished (method, seed) yet"
    methods = list(dict.fromkeys(rows["method"]))
    per = pd.DataFrame([{"method": m, "seeds": int((rows.method == m).sum()),
                         **{k: _cell(rows.loc[rows.method == m, k].to_numpy(dtype=np.float64))
                            for k in MEASURES if k in rows}} for m in methods])
    paired = []
    if REFERENCE in methods:
        ref = rows[rows.method == REFERENCE].set_index("seed")
        for m in methods:
            if m == REFERENCE:
                continue
            other = rows[rows.method == m].set_index("seed")
            seeds = ref.index.intersection(other.index)
            paired.append({"method": m, **{f"{REFERENCE} − method: {k}": _cell(
                (ref.loc[seeds, k] - other.loc[seeds, k]).to_numpy(dtype=np.float64))
                for k in PAIRED if k in rows}})
    proc = study.get("process", {})
    what = (f"{split} observations; κ* in [{proc.get('kappa_min')}, {proc.get('kappa_max')}] on "
            f"S^{int(proc.get('dim_z', 1)) - 1}, positives at κ_pos = {proc.get('kappa_pos')}; {study.get('steps')} "
            f"steps of {study.get('batch')} pairs; seeds {', '.join(map(str, sorted(set(rows['seed']))))}; mean "
            "[95 % t-interval] over seeds")
    return per, pd.DataFrame(paired), what
