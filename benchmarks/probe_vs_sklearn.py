"""Linear probe speed and accuracy: probclr's full-batch L-BFGS (torch) vs scikit-learn's
LogisticRegression (lbfgs) on the same 50,000 x 512 cached CIFAR-10 features, same objective, one run.

    python benchmarks/probe_vs_sklearn.py [--wd 1e-4] [--out FILE]

Features: a randomly initialised ConvNet with widths 64-128-256-512 (512-d) over the real CIFAR-10 JPEG
copies (train 50,000, test 10,000), standardised with train statistics. Both solvers minimise
mean CE + wd/2 ||W||^2 (scikit-learn: C = 1 / (n wd)); both stop at their own default-like tolerances.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from probclr.backbones import build_encoder, channel_stats
from probclr.config import DataConfig, EvalConfig, ModelConfig
from probclr.datasets import load_splits
from probclr.features import embed
from probclr.probes import fit_logistic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=EvalConfig().max_iter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--features", default=None, help="cache the extracted features in this .pt file")
    a = ap.parse_args()
    s = load_splits(DataConfig(dataset="cifar10"))
    t0 = time.perf_counter()
    if a.features and Path(a.features).exists():
        x, xt = torch.load(a.features, weights_only=True)
    else:
        torch.manual_seed(0)
        mean, std = channel_stats(s.train.images)
        enc = build_encoder(ModelConfig(convnet_widths=(64, 128, 256, 512)), mean, std).eval()
        x, xt = embed(enc, s.train.images), embed(enc, s.test.images)
        if a.features:
            torch.save((x, xt), a.features)
    t_feat = time.perf_counter() - t0
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x, xt = (x - mu) / sd, (xt - mu) / sd
    y, yt = s.train.labels, s.test.labels

    t0 = time.perf_counter()
    w, b = fit_logistic(x, y, 10, a.wd, a.max_iter)
    t_ours = time.perf_counter() - t0
    acc_ours = float(((xt @ w + b).argmax(1) == yt).float().mean())

    t0 = time.perf_counter()
    sk = LogisticRegression(C=1 / (len(x) * a.wd), max_iter=1000).fit(x.numpy(), y.numpy())
    t_sk = time.perf_counter() - t0
    acc_sk = float((torch.from_numpy(sk.predict(xt.numpy())) == yt).float().mean())
    result = {
        "benchmark": "linear probe on 50000 x 512 features", "features": list(x.shape), "feature_s": t_feat,
        "weight_decay": a.wd, "probclr_s": t_ours, "probclr_test_acc": acc_ours, "sklearn_s": t_sk,
        "sklearn_test_acc": acc_sk, "sklearn_iters": int(sk.n_iter_[0]), "speedup": t_sk / t_ours,
        "acc_gap_points": 100 * (acc_ours - acc_sk), "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
