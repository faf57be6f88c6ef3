"""2-D maps of test embeddings: t-SNE (scikit-learn) and UMAP (when umap-learn is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor


def umap_available() -> bool:
    """Whether the optional umap-learn package is installed."""
    return importlib.util.find_spec("umap") is not None


MIN_MAP_POINTS = 5  # fewer images make no map: t-SNE needs perplexity < N, UMAP a neighbour or more


def map_perplexity(n: int) -> float:
    """t-SNE's perplexity for n points: 30 (scikit-learn's default) where n allows, else (n - 1) / 3."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def embedding_map(x: Tensor, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2), N >= MIN_MAP_POINTS. Inputs are L2-normalised (the geometry the contrastive loss
    shapes); t-SNE's perplexity and UMAP's neighbours shrink with small N."""
    n = x.shape[0]
    if n < MIN_MAP_POINTS:
        raise ValueError(f"an embedding map needs at least {MIN_MAP_POINTS} points, got {n}")
    z = torch.nn.functional.normalize(x.float(), dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", perplexity=map_perplexity(n), random_state=seed).fit_transform(z)
    if method == "umap":
        if not umap_available():
            raise ValueError("UMAP needs the umap-learn package: pip install umap-learn")
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(z)
    raise ValueError(f"unknown map method {method!r}; valid: tsne, umap")
