"""Tabulate the CPU-recipe search (benchmarks/cpu_recipe_search.sh) for BENCHMARKS §4.

    python benchmarks/summarise_recipe.py runs/recipe [BASE]

One row per candidate: the linear probe's accuracy on the 5,000 validation images (never test) at 1 / 10 /
100 % of the label pool, the mean over the candidate's seeds, its change against BASE (default ``base``)
paired by seed (only seeds both have), the last epoch's loss and the mean seconds per epoch.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from analysis.reports.text import md_table

FRACTIONS = (0.01, 0.1, 1.0)


def run_row(run: Path) -> dict[str, object] | None:
    """A finished candidate run as one record (None while it has no validation results)."""
    res_path = run / "eval" / "last" / "val" / "results.json"
    match = re.fullmatch(r"(.+)-s(\d+)", run.name)
    if not res_path.is_file() or match is None:
        return None
    rows = json.loads(res_path.read_text())["rows"]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch_s"' in line]
    row: dict[str, object] = {"candidate": match[1], "seed": int(match[2]), "loss": epochs[-1]["loss"],
                              "epoch_s": sum(e["epoch_s"] for e in epochs) / len(epochs)}
    for f in FRACTIONS:
        acc = [r["accuracy"] for r in rows if r["probe"] == "linear" and r["fraction"] == f]
        row[f"val {100 * f:g} %"] = 100 * sum(acc) / len(acc) if acc else float("nan")
    return row


def table(root: Path, base: str = "base") -> pd.DataFrame:
    """Mean over seeds per candidate, and the paired change against ``base`` (same seeds only)."""
    runs = pd.DataFrame([r for p in sorted(root.iterdir()) if p.is_dir() and (r := run_row(p))])
    cols = [f"val {100 * f:g} %" for f in FRACTIONS]
    ref = runs[runs.candidate == base].set_index("seed")[cols]
    out = []
    for name, group in runs.groupby("candidate", sort=False):
        g = group.set_index("seed")
        rec: dict[str, object] = {"candidate": name, "seeds": ",".join(str(s) for s in g.index)}
        rec.update({c: round(float(g[c].mean()), 2) for c in cols})
        both = g.index.intersection(ref.index)
        for c in cols:
            rec[f"Δ {c[4:]}"] = round(float((g.loc[both, c] - ref.loc[both, c]).mean()), 2) if len(both) else None
        rec["loss"] = round(float(g["loss"].mean()), 3)
        rec["s/epoch"] = round(float(g["epoch_s"].mean()), 1)
        out.append(rec)
    return pd.DataFrame(out)


if __name__ == "__main__":
    print(md_table(table(Path(sys.argv[1]), *(sys.argv[2:3]))))
