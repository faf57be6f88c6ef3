"""Linear probe convergence and speed: probclr's full-batch L-BFGS vs scikit-learn's LogisticRegression
(lbfgs), same objective, same real features, both run to convergence, one process.

    python benchmarks/probe_vs_sklearn.py --run RUN [--fraction 1.0] [--wd 1e-5 --wd 1e-4] [--out FILE]

Features: the embeddings of a pretrained run's last checkpoint (``probclr embed --run RUN`` writes them):
the frozen encoder's h on the label pool and the test images, standardised with the labeled subset's statistics.
Both solvers minimise mean CE + wd/2 ||W||^2 (scikit-learn: C = 1 / (n wd)); the objective of each
solution is recomputed here in float64, so "converged" is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from probclr.data.fractions import label_subset
from probclr.eval.embeddings import load_run_embeddings
from probclr.probes.linear import fit_logistic, logistic_loss_and_grad
from probclr.run.rundir import RunDir


def objective(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, wd: float) -> float:
    onehot = F.one_hot(y, 10).double()
    return float(logistic_loss_and_grad(x.double().T.contiguous(), onehot, w.double(), b.double(), wd)[0])


_SK: dict[tuple[int, float, float], tuple[LogisticRegression, float]] = {}


def _sklearn(x: torch.Tensor, y: torch.Tensor, wd: float, tol: float) -> tuple[LogisticRegression, float]:
    """scikit-learn's fit and its time, once per (features, weight decay, tolerance)."""
    key = (id(x), wd, tol)
    if key not in _SK:
        t0 = time.perf_counter()
        sk = LogisticRegression(C=1 / (len(x) * wd), max_iter=20000, tol=tol).fit(x.double().numpy(), y.numpy())
        _SK[key] = (sk, time.perf_counter() - t0)
    return _SK[key]


def compare(
    x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, wd: float, sk_tol: float, history: int = 400
) -> dict[str, float]:
    t0 = time.perf_counter()
    fit = fit_logistic(x, y, 10, wd, history=history)
    t_ours = time.perf_counter() - t0
    sk, t_sk = _sklearn(x, y, wd, sk_tol)
    w_sk, b_sk = torch.from_numpy(sk.coef_.T.copy()), torch.from_numpy(sk.intercept_.copy())
    f_ours, f_sk = objective(x, y, fit.weight, fit.bias, wd), objective(x, y, w_sk, b_sk, wd)
    pred_ours = (xt @ fit.weight + fit.bias).argmax(1)
    pred_sk = (xt.double() @ w_sk + b_sk).argmax(1)
    return {"weight_decay": wd, "history": history, "n": len(x), "probclr_s": t_ours, "probclr_iters": fit.iterations,
            "probclr_grad_norm": fit.grad_norm, "probclr_objective": f_ours, "sklearn_s": t_sk,
            "sklearn_iters": int(sk.n_iter_[0]), "sklearn_objective": f_sk, "relative_gap": (f_ours - f_sk) / f_sk,
            "test_predictions_differ": float((pred_ours != pred_sk).double().mean()), "speedup": t_sk / t_ours}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--fraction", type=float, action="append")
    ap.add_argument("--wd", type=float, action="append")
    ap.add_argument("--sk-tol", type=float, default=1e-8)
    ap.add_argument("--out", default=None)
    ap.add_argument("--history", type=int, action="append", help="L-BFGS memory of probclr's probe (default 400)")
    a = ap.parse_args()
    run = RunDir(a.run)
    emb = load_run_embeddings(run, run.require_checkpoint())
    pool, test = emb.split("train"), emb.split("test")
    results = []
    for fraction in a.fraction or [1.0]:
        idx = label_subset(pool.labels, fraction, 0)
        x, y = pool.h[idx].float(), pool.labels[idx]
        mu, sd = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        xs, xt = (x - mu) / sd, (test.h.float() - mu) / sd
        for wd in a.wd or [1e-5, 1e-4]:
            for history in a.history or [400]:
                r = {"fraction": fraction, **compare(xs, y, xt, wd, a.sk_tol, history)}
                results.append(r)
                print(json.dumps(r))
    if a.out:
        Path(a.out).write_text(json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
