"""A method known by its per-seed means (e.g. a BENCHMARKS table whose runs were not kept) against the rows of
one or more results.json, per label fraction: the difference "seed means − rows" and its 95 % interval.

    python benchmarks/compare_to_seed_means.py results/cpu_protocol_recipe/records/supervised/results.json \
        0.01=56.6,56.1,55.9 0.1=67.1,67.3,67.0 1.0=72.6,72.7,72.4
    python benchmarks/compare_to_seed_means.py results/cpu_protocol_recipe/records/random/eval/last/results.json \
        --probe linear 0.01=56.6,56.1,55.9 0.1=67.1,67.3,67.0 1.0=72.6,72.7,72.4
    python benchmarks/compare_to_seed_means.py --paired --probe linear \
        results/cpu_protocol_recipe/records/prob-s{0,1,2}/eval/last/results.json \
        0.01=56.6,56.1,55.9 0.1=67.1,67.3,67.0 1.0=72.6,72.7,72.4

Unpaired (default): every row of every file is one value (one label subset), against the seed means by Welch's
interval. --paired: one results file per pretraining seed, in the order of the seed means; each file's rows at a
fraction are averaged, and the per-seed differences get a t-interval (n − 1 degrees of freedom). Accuracies
in %: the seed means as given, the rows' accuracy x 100.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from analysis.measures.seed_summary import t_interval, welch_interval
from probclr.eval.results import ResultRow, load_rows


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


def accuracies(rows: list[ResultRow], fraction: float) -> np.ndarray:
    """Accuracy (%) of the rows at one label fraction."""
    return np.array([100 * r.accuracy for r in rows if np.isclose(r.fraction, fraction)])


def difference(means: np.ndarray, per_file: list[list[ResultRow]], fraction: float,
               paired: bool) -> tuple[float, float, float, str]:
    """(seed means − rows) and its 95 % interval, with the rows' side: its number of values, and paired, each
    file's mean."""
    if paired:
        if len(per_file) != len(means):
            raise ValueError(f"--paired needs one results file per seed mean: {len(per_file)} files, "
                             f"{len(means)} seed means at fraction {fraction:g}")
        file_means = [accuracies(rows, fraction) for rows in per_file]
        if any(len(a) == 0 for a in file_means) or len(means) < 2:
            raise ValueError(f"fraction {fraction:g}: --paired needs >= 2 seeds, each file with rows at it")
        per_seed = np.array([a.mean() for a in file_means])
        m, lo, hi = t_interval(means - per_seed)
        return m, lo, hi, f"{len(per_file)}: " + " / ".join(f"{v:.1f}" for v in per_seed)
    acc = np.concatenate([accuracies(rows, fraction) for rows in per_file])
    if len(acc) < 2 or len(means) < 2:
        raise ValueError(f"fraction {fraction:g}: needs >= 2 seed means and >= 2 rows, got {len(means)} and {len(acc)}")
    d, lo, hi = welch_interval(means, acc)
    return d, lo, hi, str(len(acc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items", nargs="+", help="results.json files (evaluate, supervised), then FRACTION=M1,M2,... "
                    "per-seed means (%%) of the other method")
    ap.add_argument("--probe", default=None, help="only the rows of this probe (default: every row)")
    ap.add_argument("--paired", action="store_true", help="one results file per seed mean, paired in order")
    args = ap.parse_args(argv)
    files = [Path(i) for i in args.items if "=" not in i]
    try:
        means_by_fraction = parse_means([i for i in args.items if "=" in i])
        if not files or not means_by_fraction:
            raise ValueError("give at least one results.json and one FRACTION=M1,M2,... item")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"no results file {missing[0]!r}: give results.json files of finished evaluations")
        per_file = [[r for r in load_rows(f) if args.probe in (None, r.probe)] for f in files]
        kind = "paired t" if args.paired else "Welch"
        values = "rows' seeds: their means" if args.paired else "rows' values"
        lines = [f"| fraction | seed means | {values} | seed means − rows (95 % {kind} interval) |",
                 "|---|---|---|---|"]
        for fraction, means in means_by_fraction.items():
            d, lo, hi, n = difference(means, per_file, fraction, args.paired)
            lines.append(f"| {100 * fraction:g} % | {len(means)} | {n} | {d:+.1f} [{lo:+.1f}, {hi:+.1f}] |")
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
