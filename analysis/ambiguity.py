"""Does certainty fall as the input becomes more ambiguous? Crops of shrinking area and seeded
CIFAR-10-C-style corruptions of growing severity, scored by every certainty the model has."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from analysis.uncertainty import Correlation, spearman_ci
from probclr.corruptions import CORRUPTIONS, SEVERITIES, corrupt, crop_area
from probclr.embeddings import embed_images
from probclr.heads import SimCLRModel


def certainties(out: dict[str, Tensor], probe: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """Every certainty score of one embedding pass (larger = more certain): kappa if the head has one, the
    representation norm, and the probe's max-softmax if a probe (features -> probabilities) is given."""
    scores = {"feature_norm": out["features"].double().norm(dim=1)}
    if "kappa" in out:
        scores = {"kappa": out["kappa"].double(), **scores}
    if probe is not None:
        scores["max_softmax"] = probe(out["features"]).double().max(dim=1).values
    return scores


class Ambiguity(NamedTuple):
    correlations: pd.DataFrame  # score, factor, rho, low, high, n
    by_level: pd.DataFrame  # score, factor, level, mean certainty (for plots)


def _row(score: str, factor: str, c: Correlation) -> dict[str, object]:
    return {"score": score, "factor": factor, "rho": c.rho, "low": c.low, "high": c.high, "n": c.n}


@torch.no_grad()
def ambiguity_analysis(
    model: SimCLRModel, images: Tensor, seed: int = 0, probe: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 512, boots: int = 200,
) -> Ambiguity:
    """images: uint8 (N, C, H, W) test images. Crop area ~ U(0.1, 1) per image (one crop each); every
    corruption at severities 0..5 for every image. Spearman of each certainty with crop area (expected > 0)
    and with severity (expected < 0, cluster bootstrap over images)."""
    x = images.float().div(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    area = 0.1 + 0.9 * torch.rand(n, generator=gen, dtype=torch.float64)
    cropped = crop_area(x, area.float(), gen)
    rows, levels = [], []
    crop_scores = certainties(embed_images(model, cropped, batch_size), probe)
    bins = np.digitize(area.numpy(), np.linspace(0.1, 1.0, 10)[1:-1])  # 9 equal-width area bins
    for name, s in crop_scores.items():
        rows.append(_row(name, "crop area", spearman_ci(s, area, boots=boots, seed=seed)))
        for b in range(9):
            sel = torch.from_numpy(bins == b)
            levels.append({"score": name, "factor": "crop area", "level": 0.15 + 0.1 * b,
                           "mean": float(s[sel].mean())})
    for ci, cname in enumerate(CORRUPTIONS):
        per_level = []
        for sev in range(SEVERITIES + 1):
            xc = corrupt(x, cname, sev, seed=seed * 1000 + ci * 10 + sev)
            per_level.append(certainties(embed_images(model, xc, batch_size), probe))
        for name in per_level[0]:
            s = torch.cat([lv[name] for lv in per_level])
            sev = torch.arange(SEVERITIES + 1).repeat_interleave(n)
            group = torch.arange(n).repeat(SEVERITIES + 1)
            rows.append(_row(name, cname, spearman_ci(s, sev, groups=group, boots=boots, seed=seed)))
            for lv, scores in enumerate(per_level):
                levels.append({"score": name, "factor": cname, "level": lv, "mean": float(scores[name].mean())})
    return Ambiguity(pd.DataFrame(rows), pd.DataFrame(levels))
