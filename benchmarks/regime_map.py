"""The regime map: where the Monte-Carlo likelihood of ``--new-loss`` differs from its deterministic surrogate
(``loss.name=shrinkage``), as the sphere's dimension D and the scale of kappa vary, at the known process's own
posteriors on validation observations (studies/controlled/regime.py).

    python benchmarks/regime_map.py --out results/controlled/regime [--seed 0]

Writes regime.json (rows), regime.md (table) and regime.png (two heat maps).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from probclr.io import atomic_write_json, atomic_write_text
from probclr.provenance import provenance
from studies.controlled.regime import regime_map
from studies.controlled.summary import regime_figure, regime_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/controlled/regime"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = regime_map(batches=args.batches, samples=args.samples, seed=args.seed)
    wall = time.perf_counter() - t0
    atomic_write_json(args.out / "regime.json", {"rows": rows, "seed": args.seed, "batches": args.batches,
                                                 "samples": args.samples, "wall_s": wall,
                                                 "provenance": provenance(torch.device("cpu"))})
    atomic_write_text(args.out / "regime.md", regime_table(rows))
    regime_figure(rows, args.out / "regime.png")
    print(regime_table(rows))
    print(f"{wall:.0f} s; written: {args.out}")


if __name__ == "__main__":
    main()
