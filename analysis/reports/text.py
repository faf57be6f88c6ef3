"""How numbers are shown, in one place: "mean ± std" strings and Markdown tables. Every table of ``analysis``
formats through it; it imports no plotting library (a command that prints a table starts faster)."""

from __future__ import annotations

import pandas as pd

__all__ = ["md_table", "mean_pm", "series_pm"]


def mean_pm(mean: float, std: float, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` (both times ``scale``) to ``digits`` decimals; the mean alone when std is undefined."""
    if pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def series_pm(series: pd.Series, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` of a series (sample std; the mean alone for a single value)."""
    return mean_pm(series.mean(), series.std() if len(series) > 1 else float("nan"), scale, digits)


def _md_cell(v: object) -> str:
    """One Markdown table cell: whole floats as integers, others to 4 significant digits, NaN as a dash, a
    literal | escaped (a score named "kappa | feature_norm" otherwise splits its row into one cell too many)."""
    if isinstance(v, float):
        if v != v:
            text = "–"
        elif v.is_integer() and abs(v) < 1e15:
            text = str(int(v))
        else:
            text = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    else:
        text = str(v)
    return text.replace("|", "\\|")


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (cells by ``_md_cell``)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
