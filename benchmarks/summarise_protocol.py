"""Summarise a CPU-protocol directory (benchmarks/cpu_protocol.sh) into the Markdown tables of BENCHMARKS.md.

    python benchmarks/summarise_protocol.py runs/protocol
    python benchmarks/summarise_protocol.py runs/protocol 'simclrn-s*' 'probn-s*'   # chosen runs, by name

SimCLR rows pool every pretraining seed x label-subset seed; the wall time of each pretraining run is read
from its metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

from analysis.reports.tables import comparison_table, format_table
from probclr.eval.results import ResultRow, load_rows
from probclr.io import read_jsonl


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/protocol")
    patterns = sys.argv[2:]  # run-name globs: rows are then labelled by run name without its "-sN" seed
    rows: list[ResultRow] = []
    found = [p for g in (patterns or ["simclr-s*", "prob-s*"]) for p in sorted(root.glob(f"{g}/eval/last/results.json"))]
    for res in found:
        run_rows = load_rows(res)
        if patterns:
            label = re.sub(r"-s\d+$", "", res.parents[2].name)
            run_rows = [dataclasses.replace(r, method=label) for r in run_rows]
        rows += run_rows
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


if __name__ == "__main__":
    main()
