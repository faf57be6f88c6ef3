"""Weighted kNN as a classifier with probabilities (Wu et al. 2018's vote, made calibrated).

The labeled subset is the memory bank; each query's ``k`` nearest (cosine) neighbours vote with weight
exp((sim - max sim) / T). Two things make the vote shares probabilities that mean something:

- ``k`` is at most a share of the bank (``max_share``, default 10 %): with k >= the bank every labeled image
  votes and the shares collapse towards the class priors;
- the vote temperature ``T``, a sharpening exponent ``gamma`` (share^gamma, renormalised: the vote shares of
  20 neighbours are lumpy, and NLL-optimal ``T`` alone left them under-confident on the validation split)
  and a small smoothing ``eps`` (p = (1 - eps) share + eps / C, so a class without a neighbour is unlikely,
  not impossible) are fitted by NLL on the labeled subset itself, each label predicted from the others
  (leave-one-out), as the linear probe's weight decay is chosen on labels only — never on the evaluation
  split. (``gamma`` was added after its validation-split ECE: BENCHMARKS §3.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPERATURES = tuple(float(t) for t in torch.logspace(-3, 0, 16).tolist())  # 0.001 ... 1
SMOOTHING = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)
SHARPENING = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FALLBACK_T, FALLBACK_EPS = 0.07, 1e-2  # when too few labels can be held out


class KNNProbe(NamedTuple):
    """A fitted kNN classifier: the labeled bank and the vote temperature, sharpening and smoothing."""
    bank: Tensor  # (M, D) L2-normalised labeled features
    bank_y: Tensor  # (M,)
    num_classes: int
    k: int
    temperature: float
    eps: float
    selection: str  # how T, gamma and eps were chosen
    gamma: float = 1.0

    def probs(self, x: Tensor, chunk: int = 1024) -> Tensor:
        """(N, C) smoothed vote shares of the queries ``x`` (N, D)."""
        top, idx = neighbours(self.bank, x, self.k, chunk)
        return vote(top, self.bank_y[idx], self.num_classes, self.temperature, self.eps, self.gamma)

    def describe(self) -> str:
        return f"k={self.k}, T={self.temperature:.3g}, gamma={self.gamma:g}, eps={self.eps:g} ({self.selection})"


def capped_k(k: int, bank_size: int, max_share: float) -> int:
    """``k``, but at most ``max_share`` of the bank (and at least one neighbour)."""
    return max(1, min(k, bank_size, math.floor(max_share * bank_size)))


def neighbours(bank: Tensor, queries: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Cosine similarities (N, k) and bank indices (N, k) of each query's k nearest bank rows."""
    q_all = F.normalize(queries.float(), dim=1)  # (N, D)
    sims, idxs = [], []
    for q in q_all.split(chunk):
        top, idx = (q @ bank.T).topk(k, dim=1)  # (n, k), (n, k)
        sims.append(top)
        idxs.append(idx)
    return torch.cat(sims), torch.cat(idxs)


def vote(
    top: Tensor, labels: Tensor, num_classes: int, temperature: float, eps: float = 0.0, gamma: float = 1.0,
) -> Tensor:
    """(N, C) probabilities from neighbour similarities ``top`` (N, k) and their labels (N, k)."""
    # shifted by each query's own nearest similarity: the shares are unchanged, and a small T can no longer
    # underflow every weight of a query whose neighbours are all far (which made its vote uniform: chance)
    finite = top.masked_fill(~torch.isfinite(top), -torch.inf)
    w = torch.exp((finite - finite.max(dim=1, keepdim=True).values) / temperature).nan_to_num(0.0)  # (N, k) in [0, 1]
    votes = torch.zeros(top.shape[0], num_classes).scatter_add_(1, labels, w) ** gamma  # (N, C)
    total = votes.sum(dim=1, keepdim=True)  # (N, 1)
    share = torch.where(total > 0, votes / total.clamp_min(1e-300), 1.0 / num_classes)  # (N, C) no neighbour -> uniform
    return (1 - eps) * share + eps / num_classes


def _nll(probs: Tensor, y: Tensor) -> float:
    return float(-probs.gather(1, y.view(-1, 1)).clamp_min(1e-12).log().mean())


def loo_neighbours(bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each bank row's k nearest *other* rows: similarities (M, k) and indices (M, k) (leave-one-out)."""
    top, idx = neighbours(bank, bank, min(k + 1, bank.shape[0]))  # (M, k+1)
    own = idx == torch.arange(bank.shape[0])[:, None]  # (M, k+1): where each row found itself
    own[~own.any(dim=1), -1] = True  # a duplicate outranked it: drop the farthest instead
    top = top.masked_fill(own, -torch.inf)
    top, pos = top.topk(k, dim=1)  # (M, k)
    return top, idx.gather(1, pos)


def fit_vote(bank: Tensor, bank_y: Tensor, num_classes: int, k: int) -> tuple[float, float, float]:
    """(T, gamma, eps) of the grid with the lowest leave-one-out NLL of the labeled bank (every label used
    once as a query against the others; no held-out share needed, so it works with a handful of labels)."""
    top, idx = loo_neighbours(bank, k)
    nb = bank_y[idx]  # (M, k)
    best = min(
        ((_nll(vote(top, nb, num_classes, t, e, g), bank_y), t, g, e)
         for t in TEMPERATURES for g in SHARPENING for e in SMOOTHING),
        key=lambda r: r[0],
    )
    return best[1], best[2], best[3]


def train_knn_probe(
    x: Tensor, y: Tensor, num_classes: int, k: int = 20, max_share: float = 0.1, temperature: float | None = None,
) -> KNNProbe:
    """A kNN classifier on the labeled subset (x (N, D), y (N,)); T and eps fitted by leave-one-out NLL
    on the subset unless T is given."""
    bank = F.normalize(x.float(), dim=1)  # (N, D)
    kk = capped_k(k, int(y.numel()), max_share)
    if temperature is not None:
        t, eps, how = temperature, FALLBACK_EPS, "T fixed"
    elif y.numel() < 3:
        t, eps, how = FALLBACK_T, FALLBACK_EPS, "default (fewer than 3 labels)"
    else:
        t, gamma, eps = fit_vote(bank, y, num_classes, capped_k(k, int(y.numel()) - 1, max_share))
        return KNNProbe(bank, y, num_classes, kk, t, eps, f"fitted by leave-one-out NLL on the {y.numel()} labels",
                        gamma)
    return KNNProbe(bank, y, num_classes, kk, t, eps, how)
