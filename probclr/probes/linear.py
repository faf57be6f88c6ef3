"""Probes on frozen features: multinomial logistic regression (L-BFGS, run to convergence) and a small MLP
(kNN: probclr.probes.knn)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probclr.data.fractions import holdout_split
from probclr.probes.metrics import score


class LinearProbe(NamedTuple):
    """A fitted multinomial logistic regression on standardised features."""
    weight: Tensor  # (D, C)
    bias: Tensor  # (C,)
    mean: Tensor  # (D,) feature standardisation, from the labeled subset only
    std: Tensor  # (D,)
    weight_decay: float
    selection: str  # how weight_decay was chosen
    iterations: int = 0  # L-BFGS iterations of the final fit
    grad_norm: float = 0.0  # gradient norm at the final fit's solution
    converged: bool = True

    def describe(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return f"wd={self.weight_decay:g} ({self.selection}); L-BFGS {self.iterations} it, |g|={self.grad_norm:.1e} {state}"

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


class LogisticFit(NamedTuple):
    """The weights of one L-BFGS fit with how it ended (iterations, gradient norm, converged)."""
    weight: Tensor  # (D, C)
    bias: Tensor  # (C,)
    iterations: int  # L-BFGS iterations used
    grad_norm: float  # ||gradient|| of the objective at the returned point (2-norm over W and b)
    objective: float
    converged: bool  # stopped by the tolerance, not by max_iter


def fit_logistic(
    x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int = 2000, tol: float = 1e-7,
    init: tuple[Tensor, Tensor] | None = None, history: int = 400,
) -> LogisticFit:
    """argmin_W,b mean_i CE(x_i W + b, y_i) + wd/2 ||W||^2, full batch, L-BFGS with strong Wolfe line search.

    The same objective as scikit-learn's LogisticRegression(C = 1 / (n * wd)) (bias not penalised), solved
    in float64. Stops when the largest gradient entry is below ``tol`` (``converged``), when no step changes
    the objective any more, or after ``max_iter`` iterations; ``init`` warm-starts from another solution
    (say, a neighbouring weight decay); ``history`` is L-BFGS's memory: 400 pairs (was 20; torch's default
    is 100, scikit-learn's 10) took 3.4-6x fewer iterations to the tolerance on real features at 10-100 %
    labels (BENCHMARKS §2), at up to ~1.6x the cost per iteration. Returns weights in ``x``'s dtype.
    """
    xt = x.T.double().contiguous()  # (D, N) float64: float32 stalls before the gradient tolerance is reached
    onehot = F.one_hot(y, num_classes).double()  # (N, C)
    w0, b0 = init if init is not None else (torch.zeros(x.shape[1], num_classes), torch.zeros(num_classes))
    w = w0.double().clone().requires_grad_(True)  # (D, C)
    b = b0.double().clone().requires_grad_(True)  # (C,)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, history_size=history, line_search_fn="strong_wolfe",
        tolerance_grad=tol, tolerance_change=1e-14,
    )

    def closure() -> Tensor:
        with torch.no_grad():
            loss, w.grad, b.grad = logistic_loss_and_grad(xt, onehot, w, b, weight_decay)
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss, gw, gb = logistic_loss_and_grad(xt, onehot, w, b, weight_decay)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    gmax = max(float(gw.abs().max()), float(gb.abs().max()))
    gnorm = float(torch.sqrt((gw * gw).sum() + (gb * gb).sum()))
    return LogisticFit(w.detach().to(x.dtype), b.detach().to(x.dtype), iters, gnorm, float(loss), gmax <= tol)


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-6)


def train_linear_probe(
    x: Tensor, y: Tensor, num_classes: int, weight_decays: tuple[float, ...], holdout: float, seed: int,
    max_iter: int = 2000, tol: float = 1e-7, final_fits: dict[float, LogisticFit] | None = None,
) -> LinearProbe:
    """Choose weight decay on a held-out part of the labeled subset (NLL), refit on all of it to convergence.

    ``final_fits`` (weight decay -> fit) shares the refit between calls on the same (x, y) — label seeds that
    draw the same subset but hold out different parts of it: the refit does not depend on the seed."""
    x = x.float()
    fit_idx, hold_idx = holdout_split(y, holdout, seed)
    if len(weight_decays) == 1 or hold_idx.numel() == 0 or torch.unique(y[hold_idx]).numel() < 2:
        wd = sorted(weight_decays)[len(weight_decays) // 2]
        selection = "default (too few labels to hold out)" if len(weight_decays) > 1 else "fixed"
    else:
        wd = choose_weight_decay(x[fit_idx], y[fit_idx], x[hold_idx], y[hold_idx], num_classes, weight_decays,
                                 max_iter, tol)
        selection = f"held-out {hold_idx.numel()} of {y.numel()} labels"
    mean, std = _standardise(x)
    fit = final_fits.get(wd) if final_fits is not None else None
    if fit is None:
        fit = fit_logistic((x - mean) / std, y, num_classes, wd, max_iter, tol)
        if final_fits is not None:
            final_fits[wd] = fit
    return LinearProbe(fit.weight, fit.bias, mean, std, wd, selection, fit.iterations, fit.grad_norm, fit.converged)


def choose_weight_decay(
    xf: Tensor, yf: Tensor, xh: Tensor, yh: Tensor, num_classes: int, weight_decays: tuple[float, ...],
    max_iter: int, tol: float,
) -> float:
    """The weight decay whose converged fit on (xf, yf) has the lowest NLL on the holdout (xh, yh).

    Fitted from the largest decay down, each warm-started from the previous solution (a continuation path:
    the small decays, the slowest to converge, start close to their optimum).
    """
    mean, std = _standardise(xf)
    xf, xh = (xf - mean) / std, (xh - mean) / std
    best: tuple[float, float] | None = None
    init: tuple[Tensor, Tensor] | None = None
    for cand in sorted(weight_decays, reverse=True):
        fit = fit_logistic(xf, yf, num_classes, cand, max_iter, tol, init)
        init = (fit.weight, fit.bias)
        nll = score(torch.softmax(xh @ fit.weight + fit.bias, dim=1), yh).nll
        if best is None or nll < best[0]:
            best = (nll, cand)
    assert best is not None
    return best[1]


class MLPProbe(nn.Module):
    """A one-hidden-layer classifier on standardised frozen features."""
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
