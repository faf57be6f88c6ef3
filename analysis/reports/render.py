"""How figures are drawn, in one place: the headless plotting backend and figures written to PNG atomically.
Every figure module of ``analysis`` renders through it (numbers and tables: ``analysis.reports.text``)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from probclr.io import atomic_write_bytes  # noqa: E402

__all__ = ["plt", "save_figure", "sns"]


def save_figure(fig: plt.Figure, path: Path, dpi: int = 130) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (a full disk leaves no temporary file)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
