"""Which predictive for the Laplace probe: Monte-Carlo draws (64 or more) or the deterministic probit
approximation, each with its posterior scale chosen on the labeled holdout, against the MAP probe. Read on the
validation images only (the choice is made here; the test set is not loaded).

    python benchmarks/laplace_predictive.py --run RUN [--fraction 0.01 ...] [--seeds 3] [--out FILE]

Per fraction and label subset: the MAP probe (`probclr evaluate`'s, weight decay chosen on the holdout), then
for each predictive and rule the scale of ``POSTERIOR_SCALES`` chosen on the holdout (``min``: lowest NLL;
``1se``: the smallest within one paired standard error of the lowest) and the val accuracy / NLL of
the Laplace probe at that scale. Prints one Markdown table (means over subsets and per-subset deltas; the NLL
difference's interval is paired over the validation images, the subsets' errors treated as independent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from analysis.measures.bayes_probe import BayesianProbe, heldout_posterior_scale
from analysis.measures.calibration import holdout_refit
from probclr.config import EvalConfig
from probclr.data.fractions import label_subset
from probclr.eval.embeddings import Embeddings, load_run_embeddings
from probclr.probes.linear import train_linear_probe
from probclr.probes.metrics import score
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint

# name -> (predictive, Monte-Carlo draws, rule of the scale's choice)
VARIANTS = {"mc64, min": ("mc", 64, "min"), "mc1024, min": ("mc", 1024, "min"), "probit, min": ("probit", 0, "min"),
            "probit, 1se": ("probit", 0, "1se"), "mc64, 1se": ("mc", 64, "1se")}


def one_subset(
    pool: Embeddings, val: Embeddings, classes: int, fraction: float, seed: int, ev: EvalConfig
) -> list[dict[str, Any]]:
    """The MAP probe and each variant's Laplace probe on one labeled subset, scored on the validation images."""
    idx = label_subset(pool.labels, fraction, seed)
    x, y = pool.h[idx], pool.labels[idx]
    probe = train_linear_probe(x, y, classes, ev.weight_decays, ev.holdout, seed, ev.max_iter, ev.probe_tol)
    refit = holdout_refit(x, y, classes, probe, ev.holdout, seed, ev.max_iter)
    p_map = probe.probs(val.h.float()).double()  # (N_val, C)
    base = score(p_map, val.labels)
    yv = val.labels.long().view(-1, 1)
    nll_map = -p_map.gather(1, yv).clamp_min(1e-12).log().squeeze(1)  # (N_val,)
    rows = [{"fraction": fraction, "seed": seed, "predictive": "MAP", "scale": 0.0,
             "accuracy": base.accuracy, "nll": base.nll, "fit_s": 0.0, "d_nll_se": 0.0}]
    for name, (predictive, draws, rule) in VARIANTS.items():
        t0 = time.perf_counter()
        scale = heldout_posterior_scale(x, y, classes, probe, ev.holdout, seed, refit=refit, predictive=predictive,
                                        rule=rule)
        bayes = BayesianProbe(x, y, classes, probe, scale, predictive)
        p = bayes.probs(val.h, draws=max(draws, 1), seed=seed)  # (N_val, C)
        s = score(p, val.labels)
        diff = -p.gather(1, yv).clamp_min(1e-12).log().squeeze(1) - nll_map  # (N_val,) paired per image
        rows.append({"fraction": fraction, "seed": seed, "predictive": name, "scale": scale,
                     "accuracy": s.accuracy, "nll": s.nll, "fit_s": time.perf_counter() - t0,
                     "d_nll_se": float(diff.std()) / diff.numel() ** 0.5})
    return rows


def main() -> None:
    """Every subset of every fraction, then the Markdown table of means."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--fraction", type=float, action="append")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    run = RunDir(a.run)
    ckpt = run.require_checkpoint()
    ev = config_from_checkpoint(load_run_checkpoint(run, ckpt)).eval
    emb = load_run_embeddings(run, ckpt)
    pool, val = emb.split("train"), emb.split("val")
    rows: list[dict[str, Any]] = []
    for fraction in a.fraction or [0.01, 0.1, 1.0]:
        for seed in range(a.seeds if fraction < 1 else 1):
            rows += one_subset(pool, val, len(emb.classes), fraction, seed, ev)
            print(json.dumps(rows[-len(VARIANTS) - 1:]), flush=True)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    print("| labels | predictive | scales chosen | accuracy % (mean) | Δ accuracy vs MAP (per subset) | NLL (mean) |"
          " Δ NLL vs MAP (mean) [95 % CI, paired over images] | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for fraction in sorted({r["fraction"] for r in rows}):
        fr = [r for r in rows if r["fraction"] == fraction]
        maps = {r["seed"]: r for r in fr if r["predictive"] == "MAP"}
        for name in ["MAP", *VARIANTS]:
            rs = [r for r in fr if r["predictive"] == name]
            acc = sum(r["accuracy"] for r in rs) / len(rs) * 100
            nll = sum(r["nll"] for r in rs) / len(rs)
            d_acc = ", ".join(f"{(r['accuracy'] - maps[r['seed']]['accuracy']) * 100:+.2f}" for r in rs)
            d_nll = sum(r["nll"] - maps[r["seed"]]["nll"] for r in rs) / len(rs)
            half = 1.96 * sum(r["d_nll_se"] ** 2 for r in rs) ** 0.5 / len(rs)  # the mean of independent subsets
            scales = ", ".join(f"{r['scale']:g}" for r in rs)
            ci = f"{d_nll:+.4f} [{d_nll - half:+.4f}, {d_nll + half:+.4f}]"
            print(f"| {fraction:g} | {name} | {scales} | {acc:.2f} | {d_acc} | {nll:.4f} | {ci} |"
                  f" {sum(r['fit_s'] for r in rs) / len(rs):.1f} |")


if __name__ == "__main__":
    main()
