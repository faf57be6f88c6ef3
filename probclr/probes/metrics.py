"""Classification metrics on predicted probabilities: accuracy, NLL, ECE, Brier."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

PROB_FLOOR = 1e-6  # NLL clamps probabilities here so a hard 0 (kNN votes) gives a finite, comparable value


class Scores(NamedTuple):
    """Accuracy, NLL, ECE and Brier score of predicted probabilities against labels."""
    accuracy: float  # top-1, in [0, 1]
    nll: float  # mean negative log-likelihood, nats
    ece: float  # expected calibration error, top-label, 15 equal-width bins
    brier: float  # mean squared error of the probability vector


def confidence_bin(conf: Tensor, bins: int) -> Tensor:
    """(N,) equal-width bin index of each top-label confidence, bins ((b-1)/M, b/M] (0 goes to the first)."""
    return (torch.ceil(conf.double() * bins) - 1).clamp(0, bins - 1).long()


def ece(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum_b |B_b|/n * |acc(B_b) - conf(B_b)|, bins ((b-1)/M, b/M]."""
    conf, pred = probs.max(dim=1)  # (N,), (N,)
    correct = (pred == labels).double()
    idx = confidence_bin(conf, bins)  # (N,) bin per sample
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, correct)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, conf.double())
    return float((acc_sum - conf_sum).abs().sum() / max(1, labels.numel()))


def score(probs: Tensor, labels: Tensor) -> Scores:
    """probs: (N, C) rows summing to 1; labels: (N,) int."""
    probs = probs.double().cpu()
    labels = labels.cpu()
    acc = float((probs.argmax(dim=1) == labels).double().mean())
    p_true = probs.gather(1, labels.view(-1, 1)).squeeze(1).clamp_min(PROB_FLOOR)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    brier = float(((probs - onehot) ** 2).sum(dim=1).mean())
    return Scores(acc, float(-p_true.log().mean()), ece(probs, labels), brier)
