"""A method known by its per-seed means (e.g. a BENCHMARKS table whose runs were not kept) against the rows of a
results.json, per label fraction: the difference of the means and its 95 % Welch interval (unpaired).

    python benchmarks/compare_to_seed_means.py results/cpu_protocol_recipe/records/supervised/results.json \
        0.01=56.6,56.1,55.9 0.1=67.1,67.3,67.0 1.0=72.6,72.7,72.4
    python benchmarks/compare_to_seed_means.py results/cpu_protocol_recipe/records/random/eval/last/results.json \
        --probe linear 0.01=56.6,56.1,55.9 0.1=67.1,67.3,67.0 1.0=72.6,72.7,72.4

Accuracies in %: the seed means as given, the rows' accuracy x 100 (one value per row: per label subset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from analysis.measures.seed_summary import welch_interval
from probclr.eval.results import load_rows


def parse_means(items: list[str]) -> dict[float, np.ndarray]:
    """``FRACTION=M1,M2,...`` items -> fraction -> per-seed means."""
    out = {}
    for item in items:
        fraction, _, values = item.partition("=")
        try:
            out[float(fraction)] = np.array([float(v) for v in values.split(",")])
        except ValueError:
            raise ValueError(f"bad seed means {item!r}: give FRACTION=M1,M2,... e.g. 0.1=67.1,67.3,67.0") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results.json (evaluate, supervised)")
    ap.add_argument("means", nargs="+", help="FRACTION=M1,M2,... per-seed means (%%) of the other method")
    ap.add_argument("--probe", default=None, help="only the rows of this probe (default: every row)")
    args = ap.parse_args(argv)
    try:
        means_by_fraction = parse_means(args.means)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    rows = [r for r in load_rows(args.results) if args.probe in (None, r.probe)]
    print("| fraction | seed means | rows | mean − rows' mean (95 % Welch interval) |\n|---|---|---|---|")
    for fraction, means in means_by_fraction.items():
        acc = np.array([100 * r.accuracy for r in rows if np.isclose(r.fraction, fraction)])
        if len(acc) < 2 or len(means) < 2:
            print(f"fraction {fraction:g}: needs >= 2 seed means and >= 2 rows, got {len(means)} and {len(acc)}",
                  file=sys.stderr)
            return 2
        d, lo, hi = welch_interval(means, acc)
        print(f"| {100 * fraction:g} % | {len(means)} | {len(acc)} | {d:+.1f} [{lo:+.1f}, {hi:+.1f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
