"""2-D maps of test embeddings: t-SNE (scikit-learn) and UMAP (when umap-learn is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor


def umap_available() -> bool:
    """Whether the optional umap-learn package is installed."""
    return importlib.util.find_spec("umap") is not None


def embedding_map(x: Tensor, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2). Inputs are L2-normalised (the geometry the contrastive loss shapes)."""
    z = torch.nn.functional.normalize(x.float(), dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(z)
    if method == "umap":
        if not umap_available():
            raise ValueError("UMAP needs the umap-learn package: pip install umap-learn")
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
    raise ValueError(f"unknown map method {method!r}; valid: tsne, umap")
