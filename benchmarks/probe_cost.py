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

from probclr.config import EvalConfig
from probclr.data.fractions import holdout_split, label_subset
from probclr.probes.knn import train_knn_probe
from probclr.probes.linear import _standardise, fit_logistic


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
    fit_idx, _ = holdout_split(y, ev.holdout, args.seed)
    mean, std = _standardise(x[fit_idx])
    xf, init = (x[fit_idx] - mean) / std, None
    for wd in sorted(ev.weight_decays, reverse=True):
        t = time.perf_counter()
        f = fit_logistic(xf, y[fit_idx], classes, wd, ev.max_iter, ev.probe_tol, init)
        init = (f.weight, f.bias)
        print(f"D={x.shape[1]} n={x.shape[0]} choice fit wd={wd:g}: {time.perf_counter() - t:.1f} s,"
              f" {f.iterations} it, converged={f.converged}", flush=True)
    mean, std = _standardise(x)
    t = time.perf_counter()
    f = fit_logistic((x - mean) / std, y, classes, 1e-3, ev.max_iter, ev.probe_tol)
    print(f"final refit wd=0.001 from zero: {time.perf_counter() - t:.1f} s, {f.iterations} it", flush=True)
    t = time.perf_counter()
    knn = train_knn_probe(x, y, classes, ev.knn_k, ev.knn_max_share, ev.knn_temperature)
    acc = float((knn.probs(query["h"]).argmax(1) == query["labels"]).float().mean())
    print(f"kNN fit + predictions: {time.perf_counter() - t:.1f} s (accuracy {acc:.4f}; {knn.describe()})")


if __name__ == "__main__":
    main()
