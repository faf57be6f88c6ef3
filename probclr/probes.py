"""Probes on frozen features: multinomial logistic regression (L-BFGS), a small MLP, and weighted kNN."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probclr.fractions import holdout_split
from probclr.metrics import score


class LinearProbe(NamedTuple):
    weight: Tensor  # (D, C)
    bias: Tensor  # (C,)
    mean: Tensor  # (D,) feature standardisation, from the labeled subset only
    std: Tensor  # (D,)
    weight_decay: float
    selection: str  # how weight_decay was chosen

    def logits(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std) @ self.weight + self.bias  # (N, C)

    def probs(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)


def logistic_loss_and_grad(
    xt: Tensor, onehot: Tensor, w: Tensor, b: Tensor, weight_decay: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Objective mean_i CE(x_i W + b, y_i) + wd/2 ||W||^2 and its exact gradient, without autograd.

    ``xt`` is the feature matrix stored transposed, (D, N) contiguous: both products then stream it in
    its memory order (autograd's x.T @ g on an (N, D) matrix is ~4x slower on CPU).
    """
    n = xt.shape[1]
    logits = (w.T @ xt).T + b  # (N, C)
    logp = torch.log_softmax(logits, dim=1)  # (N, C)
    loss = -(logp * onehot).sum() / n + 0.5 * weight_decay * (w * w).sum()
    g = (logp.exp() - onehot) / n  # (N, C) d loss / d logits
    return loss, xt @ g + weight_decay * w, g.sum(dim=0)  # scalar, (D, C), (C,)


def fit_logistic(
    x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int = 300
) -> tuple[Tensor, Tensor]:
    """argmin_W,b mean_i CE(x_i W + b, y_i) + wd/2 ||W||^2, full batch, L-BFGS with strong Wolfe line search.

    The same objective as scikit-learn's LogisticRegression(C = 1 / (n * wd)) (bias not penalised).
    """
    xt = x.T.contiguous()  # (D, N)
    onehot = F.one_hot(y, num_classes).to(x.dtype)  # (N, C)
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)  # (D, C)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)  # (C,)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9,
    )

    def closure() -> Tensor:
        with torch.no_grad():
            loss, w.grad, b.grad = logistic_loss_and_grad(xt, onehot, w, b, weight_decay)
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-6)


def train_linear_probe(
    x: Tensor, y: Tensor, num_classes: int, weight_decays: tuple[float, ...], holdout: float, seed: int,
    max_iter: int = 300,
) -> LinearProbe:
    """Choose weight decay on a held-out part of the labeled subset (accuracy, then NLL), refit on all of it."""
    x = x.float()
    fit_idx, hold_idx = holdout_split(y, holdout, seed)
    if len(weight_decays) == 1 or hold_idx.numel() == 0 or torch.unique(y[hold_idx]).numel() < 2:
        wd = sorted(weight_decays)[len(weight_decays) // 2]
        selection = "default (too few labels to hold out)" if len(weight_decays) > 1 else "fixed"
    else:
        mean, std = _standardise(x[fit_idx])
        xf, xh = (x[fit_idx] - mean) / std, (x[hold_idx] - mean) / std
        best: tuple[float, float] | None = None
        wd = weight_decays[0]
        for cand in weight_decays:
            w, b = fit_logistic(xf, y[fit_idx], num_classes, cand, max_iter)
            s = score(torch.softmax(xh @ w + b, dim=1), y[hold_idx])
            key = (s.accuracy, -s.nll)
            if best is None or key > best:
                best, wd = key, cand
        selection = f"held-out {hold_idx.numel()} of {y.numel()} labels"
    mean, std = _standardise(x)
    w, b = fit_logistic((x - mean) / std, y, num_classes, wd, max_iter)
    return LinearProbe(w, b, mean, std, wd, selection)


class MLPProbe(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_classes: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)  # (N, C) logits


def train_mlp_probe(
    x: Tensor, y: Tensor, num_classes: int, hidden: int, epochs: int, seed: int, batch_size: int = 256,
    min_steps: int = 1000,
) -> MLPProbe:
    """One-hidden-layer MLP, AdamW (lr 1e-3, wd 1e-4), cosine decay, minibatches of 256; at least
    ``min_steps`` steps so that small label subsets are not under-trained."""
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = _standardise(x)
    model = MLPProbe(x.shape[1], hidden, num_classes, mean, std)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    bs = min(batch_size, x.shape[0])
    steps_per_epoch = max(1, x.shape[0] // bs)
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            if idx.numel() < 2:
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def knn_probs(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, k: int = 200, temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Weighted kNN (Wu et al. 2018): cosine similarity, top-k neighbours vote with exp(sim / T).

    Returns (N_test, C) vote shares. Only the labeled subset is the memory bank.
    """
    bank = F.normalize(train_x.float(), dim=1)  # (M, D)
    k = min(k, bank.shape[0])
    out = []
    for q in test_x.float().split(chunk):
        sim = F.normalize(q, dim=1) @ bank.T  # (n, M)
        top, idx = sim.topk(k, dim=1)  # (n, k)
        w = torch.exp((top - 1.0) / temperature)  # (n, k); shifted by the max possible sim for stability
        votes = torch.zeros(q.shape[0], num_classes).scatter_add_(1, train_y[idx], w)  # (n, C)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out)
