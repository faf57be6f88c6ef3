"""Retrieval in the embedding space, as the probabilistic-embedding literature measures it (Kirchhof et al.
2023 after Musgrave et al. 2020, "A Metric Learning Reality Check"): Recall@1, MAP@R, and R-AUROC — how well a
certainty score predicts that an image's nearest neighbour has its class."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from analysis.measures.uncertainty import auroc_or_nan


class Retrieval(NamedTuple):
    """Recall@1 and MAP@R of a set of embeddings, and whether each item's nearest neighbour shares its class."""
    recall_at_1: float
    map_at_r: float
    nn_correct: Tensor  # (N,) bool: the nearest other item has the same label


def retrieval(emb: Tensor, labels: Tensor, chunk: int = 512) -> Retrieval:
    """Cosine retrieval of every item against all others (itself excluded). MAP@R: for a query with R other
    items of its class, mean over i <= R of precision@i at the ranks i holding a correct item, divided by R."""
    x = F.normalize(emb.float(), dim=1)  # (N, D)
    n = x.shape[0]
    counts = torch.bincount(labels)  # (C,)
    r_max = int(counts.max()) - 1
    correct_1, ap = [], []
    for start in range(0, n, chunk):
        q = x[start:start + chunk]  # (n, D)
        sim = q @ x.T  # (n, N)
        rows = torch.arange(q.shape[0])
        sim[rows, start + rows] = -torch.inf  # never retrieve yourself
        k = max(1, min(r_max, n - 1))
        idx = sim.topk(k, dim=1).indices  # (n, k)
        ql = labels[start:start + chunk]  # (n,)
        rel = (labels[idx] == ql[:, None]).float()  # (n, k)
        correct_1.append(rel[:, 0].bool())
        r = (counts[ql] - 1).clamp_min(1).float()  # (n,) R per query
        ranks = torch.arange(1, k + 1).float()  # (k,)
        within = (ranks[None, :] <= r[:, None]).float()  # (n, k) only the first R ranks count
        precision = torch.cumsum(rel * within, dim=1) / ranks  # (n, k)
        ap.append((precision * rel * within).sum(dim=1) / r)
    nn = torch.cat(correct_1)
    return Retrieval(float(nn.double().mean()), float(torch.cat(ap).double().mean()), nn)


def r_auroc(certainty: Tensor, nn_correct: Tensor) -> float:
    """AUROC of ``certainty`` for "the nearest neighbour has the same class" (0.5 = chance); NaN where every
    neighbour is right or every one wrong."""
    return auroc_or_nan(certainty, nn_correct)
