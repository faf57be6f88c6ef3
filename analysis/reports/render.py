"""How numbers and figures are shown, in one place: the headless plotting backend, "mean ± std" strings,
and figures written to PNG atomically. Every table and figure module of ``analysis`` renders through it."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from probclr.io import atomic_write_bytes  # noqa: E402

__all__ = ["md_table", "mean_pm", "plt", "save_figure", "series_pm", "sns"]


def mean_pm(mean: float, std: float, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` (both times ``scale``) to ``digits`` decimals; the mean alone when std is undefined."""
    if pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def series_pm(series: pd.Series, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` of a series (sample std; the mean alone for a single value)."""
    return mean_pm(series.mean(), series.std() if len(series) > 1 else float("nan"), scale, digits)


def save_figure(fig: plt.Figure, path: Path, dpi: int = 130) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (a full disk leaves no temporary file)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


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
