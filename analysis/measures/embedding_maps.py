"""2-D maps of test embeddings: t-SNE (scikit-learn) and UMAP (when umap-learn is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

from probclr.errors import ProbclrError


def umap_available() -> bool:
    """Whether the optional umap-learn package is installed."""
    return importlib.util.find_spec("umap") is not None


MAP_METHODS = ("tsne", "umap")  # umap: the optional umap-learn (pip install 'probclr[umap]')


def check_map_methods(methods: tuple[str, ...]) -> None:
    """Refuse, before any work, an unknown map or UMAP without its package: one line naming the fix."""
    for m in methods:
        if m not in MAP_METHODS:
            raise ProbclrError(f"--maps: unknown map {m!r}; valid: {', '.join(MAP_METHODS)} (comma-separated)")
    if "umap" in methods and not umap_available():
        raise ProbclrError("--maps umap needs the umap-learn package, not installed here: pip install 'probclr[umap]'")
    if len(set(methods)) != len(methods) or not methods:
        raise ProbclrError(f"--maps must name each map once, got {','.join(methods) or 'nothing'}")


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
        check_map_methods(("umap",))
        import umap  # its first fit in a process compiles with numba (~30 s on 2 cores); seeded: reproducible

        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(z)
    raise ValueError(f"unknown map method {method!r}; valid: tsne, umap")
