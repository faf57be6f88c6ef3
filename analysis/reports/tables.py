"""Text tables of evaluation results (mean +- std over label-subset seeds)."""

from __future__ import annotations

import pandas as pd

from analysis.reports.text import mean_pm
from probclr.eval.results import ResultRow, summary_frame


def summary_table(rows: list[ResultRow]) -> pd.DataFrame:
    """One line per method, probe and fraction: accuracy (%) and ECE (%) as mean ± std, NLL, labels, seeds."""
    s = summary_frame(rows)
    return pd.DataFrame({
        "method": s["method"], "probe": s["probe"], "fraction": s["fraction"], "labels": s["n_labels"],
        "accuracy %": [mean_pm(m, d, 100) for m, d in zip(s["accuracy_mean"], s["accuracy_std"], strict=True)],
        "NLL": [mean_pm(m, d, 1.0, 3) for m, d in zip(s["nll_mean"], s["nll_std"], strict=True)],
        "ECE %": [mean_pm(m, d, 100) for m, d in zip(s["ece_mean"], s["ece_std"], strict=True)],
        "seeds": s["seeds"],
    })


def format_table(rows: list[ResultRow]) -> str:
    """The summary table of result rows as plain text."""
    return summary_table(rows).to_string(index=False)


def comparison_table(rows: list[ResultRow]) -> pd.DataFrame:
    """Accuracy (%) with fractions as columns and method/probe as rows, for side-by-side reading."""
    s = summary_frame(rows)
    s["cell"] = [mean_pm(m, d, 100) for m, d in zip(s["accuracy_mean"], s["accuracy_std"], strict=True)]
    s["row"] = s["method"] + " / " + s["probe"]
    table = s.pivot(index="row", columns="fraction", values="cell")
    table.columns = [f"{c:g}" for c in table.columns]
    return table
