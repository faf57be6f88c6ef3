"""Summarise a CPU-protocol directory (benchmarks/cpu_protocol.sh) into the Markdown tables of BENCHMARKS.md.

    python benchmarks/summarise_protocol.py runs/protocol
    python benchmarks/summarise_protocol.py runs/protocol 'simclrn-s*' 'probn-s*'   # chosen runs, by name

The first table pools every pretraining seed x label-subset seed. Then, per method / probe / fraction, the mean
and std over the pretraining seeds (each seed the mean of its label subsets) with the std over all runs in
brackets, and each pretrained method's linear probe against the supervised baseline paired by label subset
(the same subset of the label pool at the same seed: the difference averaged over pretraining seeds per subset,
its mean and 95 % t-interval over the subsets). The wall time of each pretraining run is read from its
metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.measures.seed_summary import t_interval
from analysis.reports.tables import comparison_table, format_table
from probclr.eval.results import ResultRow, load_rows, rows_frame
from probclr.io import read_jsonl


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/protocol")
    patterns = sys.argv[2:]  # run-name globs: rows are then labelled by run name without its "-sN" seed
    rows: list[ResultRow] = []
    pretrained: list[pd.DataFrame] = []  # rows of the pretrained runs, with their pretraining seed
    found = [p for g in (patterns or ["simclr-s*", "prob-s*"]) for p in sorted(root.glob(f"{g}/eval/last/results.json"))]
    for res in found:
        run_rows = load_rows(res)
        if patterns:
            label = re.sub(r"-s\d+$", "", res.parents[2].name)
            run_rows = [dataclasses.replace(r, method=label) for r in run_rows]
        rows += run_rows
        seed = re.search(r"-s(\d+)$", res.parents[2].name)
        pretrained.append(rows_frame(run_rows).assign(pretrain_seed=int(seed.group(1)) if seed else 0))
        m = read_jsonl(res.parents[2] / "metrics.jsonl")
        wall = sum(r["epoch_s"] for r in m)
        fastest = max(r["images_per_s"] for r in m)
        print(f"{res.parents[2].name}: {len(m)} epochs, pretraining {wall / 60:.1f} min "
              f"(epoch times {min(r['epoch_s'] for r in m):.0f}-{max(r['epoch_s'] for r in m):.0f} s, "
              f"best {fastest:.0f} img/s), final loss {m[-1]['loss']:.3f}")
    for name in () if patterns else ("random/eval/last/results.json", "supervised/results.json"):
        if (root / name).exists():
            rows += load_rows(root / name)
            print(f"{name}: wall {json.loads((root / name).read_text()).get('wall_s', float('nan')) / 60:.1f} min")
    table = comparison_table(rows)
    print()
    print("| method / probe | " + " | ".join(f"{100 * float(c):g} % labels" for c in table.columns) + " |")
    print("|---|" + "---|" * len(table.columns))
    for idx, r in table.iterrows():
        print(f"| {idx} | " + " | ".join(str(v) for v in r.values) + " |")
    print()
    print(format_table(rows))
    if pretrained:
        sup = rows_frame(rows).query("method == 'supervised'")
        print()
        print(per_pretraining_seed(pd.concat(pretrained, ignore_index=True), sup))


def per_pretraining_seed(df: pd.DataFrame, sup: pd.DataFrame) -> str:
    """Markdown: accuracy, ECE and NLL over pretraining seeds, and the linear probe minus supervised per label
    subset (df: pretrained rows with ``pretrain_seed``; sup: the supervised rows, seed = label subset)."""
    lines = ["| method / probe | fraction | pretraining seeds | accuracy % (mean ± sd over seeds) [sd over runs] "
             "| ECE % | NLL | − supervised, paired by label subset (95 % CI) |", "|---|---|---|---|---|---|---|"]
    for (method, probe, fraction), d in df.groupby(["method", "probe", "fraction"], sort=True):
        per_seed = d.groupby("pretrain_seed")[["accuracy", "ece", "nll"]].mean()  # (seeds, 3)
        acc = 100 * per_seed["accuracy"]
        cell = f"{acc.mean():.1f} ± {acc.std():.1f} [{100 * d['accuracy'].std():.1f}]"
        paired = ""
        s = sup[np.isclose(sup["fraction"], fraction)].set_index("seed")["accuracy"]
        if probe == "linear" and len(s):
            by_subset = d.groupby("seed")["accuracy"].mean()  # (subsets,) averaged over pretraining seeds
            common = by_subset.index.intersection(s.index)
            m, lo, hi = t_interval(100 * (by_subset[common] - s[common]).to_numpy(dtype=np.float64))
            paired = f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}] ({len(common)} subsets)"
        lines.append(f"| {method} / {probe} | {100 * fraction:g} % | {len(per_seed)} | {cell} | "
                     f"{100 * per_seed['ece'].mean():.1f} | {per_seed['nll'].mean():.3f} | {paired} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
