"""Where an evaluation's time goes at one label fraction: each weight-decay fit of the linear probe's choice
and its final refit, and the kNN's fit with its predictions, timed one by one on a run's cached features.

    python benchmarks/probe_cost.py POOL.pt QUERY.pt [--fraction 1.0] [--seed 0]

POOL.pt / QUERY.pt: the feature caches `probclr evaluate` wrote under RUN/embeddings/cache/ for the label pool
and the evaluated split (the larger file is the pool). Prints one line per fit; wall times, not ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

import probclr.probes.linear as linear
from probclr.config import EvalConfig
from probclr.data.fractions import label_subset
from probclr.probes.knn import train_knn_probe


def timed_fits() -> None:
    """Make every fit_logistic of the linear probe print its wall time, iterations and size."""
    real = linear.fit_logistic

    def fit(x: torch.Tensor, y: torch.Tensor, *a: object, **k: object) -> linear.LogisticFit:
        t = time.perf_counter()
        f = real(x, y, *a, **k)  # type: ignore[arg-type]
        wd = a[1] if len(a) > 1 else k.get("weight_decay")
        print(f"D={x.shape[1]} n={x.shape[0]} fit wd={wd:g}: {time.perf_counter() - t:.1f} s, {f.iterations} it,"
              f" converged={f.converged}", flush=True)
        return f

    linear.fit_logistic = fit  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pool")
    ap.add_argument("query")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ev = EvalConfig()
    pool, query = torch.load(args.pool, weights_only=False), torch.load(args.query, weights_only=False)
    idx = label_subset(pool["labels"], args.fraction, args.seed)
    x, y = pool["h"][idx].float(), pool["labels"][idx]  # (n, D), (n,)
    classes = int(pool["labels"].max()) + 1
    timed_fits()  # the weight-decay choice's fits (80 % of the subset), then the refit on all of it
    p = linear.train_linear_probe(x, y, classes, ev.weight_decays, ev.holdout, args.seed, ev.max_iter, ev.probe_tol)
    print(f"linear probe: {p.describe()}", flush=True)
    t = time.perf_counter()
    knn = train_knn_probe(x, y, classes, ev.knn_k, ev.knn_max_share, ev.knn_temperature)
    acc = float((knn.probs(query["h"]).argmax(1) == query["labels"]).float().mean())
    print(f"kNN fit + predictions: {time.perf_counter() - t:.1f} s (accuracy {acc:.4f}; {knn.describe()})")


if __name__ == "__main__":
    main()
