"""One result schema for every evaluation (probes, kNN, supervised, fine-tuning), saved as JSON + CSV."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from probclr.io import DamagedFileError, atomic_write_json, atomic_write_text, read_json
from probclr.probes.metrics import Scores


@dataclass(frozen=True)
class ResultRow:
    """One evaluation result: method, probe, fraction, label seed and its scores."""
    method: str  # simclr | supervised | random | ...
    probe: str  # linear | mlp | knn | finetune | end-to-end
    fraction: float  # share of the labeled training set used
    seed: int  # label-subset seed
    n_labels: int  # labeled images actually used
    accuracy: float  # test top-1, [0, 1]
    nll: float  # test NLL, nats
    ece: float  # test ECE, 15 bins
    brier: float
    detail: str = ""  # e.g. the chosen weight decay and how

    @staticmethod
    def of(method: str, probe: str, fraction: float, seed: int, n: int, s: Scores, detail: str = "") -> ResultRow:
        return ResultRow(method, probe, fraction, seed, n, s.accuracy, s.nll, s.ece, s.brier, detail)


def rows_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """Result rows as a pandas DataFrame, one row each."""
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def summary_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """Mean and std (over label-subset seeds) per method, probe and fraction."""
    df = rows_frame(rows)
    g = df.groupby(["method", "probe", "fraction"], sort=True)
    out = g[["accuracy", "nll", "ece"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["n_labels"] = g["n_labels"].mean().round().astype(int)
    out["seeds"] = g["seed"].count()
    return out.reset_index()


def save_results(out_dir: Path, rows: list[ResultRow], meta: dict[str, Any]) -> Path:
    """Write ``results.json`` (rows, summary, provenance) and ``results.csv`` (rows) atomically."""
    summary = summary_frame(rows)
    payload = {
        **meta,
        "rows": [dataclasses.asdict(r) for r in rows],
        "summary": json.loads(summary.to_json(orient="records")),
    }
    atomic_write_text(out_dir / "results.csv", rows_frame(rows).to_csv(index=False))
    atomic_write_json(out_dir / "results.json", payload)  # last: its presence marks a finished evaluation
    return out_dir / "results.json"


def load_rows(path: Path) -> list[ResultRow]:
    """Read the result rows of a results.json; a damaged file is one line."""
    data = read_json(Path(path), "results file")
    try:
        return [ResultRow(**r) for r in data["rows"]]
    except (KeyError, TypeError) as err:
        raise DamagedFileError(f"results file {str(path)!r} is damaged (its rows do not match the result schema);"
                               " re-run the evaluation") from err
