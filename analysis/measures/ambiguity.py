"""Does certainty fall as the input becomes more ambiguous? Random crops of shrinking area, the anchor's
centre crops, and seeded CIFAR-10-C-style corruptions of growing severity, scored by every certainty the
model has: pooled over images (Spearman with a bootstrap CI) and within each image."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from analysis.measures.per_image import less_certain_rate, per_image_spearman
from analysis.measures.uncertainty import Correlation, spearman_ci
from probclr.data.corruptions import CORRUPTIONS, SEVERITIES, centre_crop, corrupt, crop_area
from probclr.eval.embeddings import Embeddings, embed_images
from probclr.model.heads import SimCLRModel


def certainties(out: Embeddings, probe: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """Every certainty score of one embedding pass (larger = more certain): kappa if the head has one, the
    label-free norms (representation, projection before normalisation), and the probe's max-softmax if a
    probe (features -> probabilities) is given."""
    scores = out.label_free()
    if probe is not None:
        scores["max_softmax"] = probe(out.h).double().max(dim=1).values
    return scores


class Ambiguity(NamedTuple):
    """The ambiguity study's tables: pooled correlations, means per level, per-image statistics."""
    correlations: pd.DataFrame  # score, factor, rho, low, high, n
    by_level: pd.DataFrame  # score, factor, level, mean certainty (for plots)
    per_image: pd.DataFrame  # score, factor, statistic, value, n


def _row(score: str, factor: str, c: Correlation) -> dict[str, object]:
    return {"score": score, "factor": factor, "rho": c.rho, "low": c.low, "high": c.high, "n": c.n}


def _stat(score: str, factor: str, statistic: str, value: float, n: int) -> dict[str, object]:
    return {"score": score, "factor": factor, "statistic": statistic, "value": value, "n": n}


class _Pass(NamedTuple):
    """One model over one set of images: the scores of any view of them."""

    model: SimCLRModel
    probe: Callable[[Tensor], Tensor] | None
    batch_size: int

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        return certainties(embed_images(self.model, x, self.batch_size), self.probe)


@torch.no_grad()
def ambiguity_analysis(
    model: SimCLRModel, images: Tensor, seed: int = 0, probe: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 512, boots: int = 200,
) -> Ambiguity:
    """images: uint8 (N, C, H, W). Random crops of area ~ U(0.1, 1) and centre crops of side ~ U(0.25, 1)
    (one each per image), every corruption at severities 0..5 for every image. Spearman of each certainty
    with crop area / side (expected > 0) and with severity (expected < 0, cluster bootstrap over images);
    per image: how often the altered view is less certain than the clean image, and each image's own
    Spearman with severity."""
    x = images.float().div(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    scores_of = _Pass(model, probe, batch_size)
    clean = scores_of(x)
    rows, levels, per = _random_crops(scores_of, x, seed, boots)
    for part, more in zip((rows, levels, per), _centre_crops(scores_of, x, clean, seed, boots), strict=True):
        part.extend(more)
    for part, more in zip((rows, levels, per), _corruptions(scores_of, x, clean, seed, boots), strict=True):
        part.extend(more)
    return Ambiguity(pd.DataFrame(rows), pd.DataFrame(levels), pd.DataFrame(per))


Tables = tuple[list[dict[str, object]], list[dict[str, object]], list[dict[str, object]]]


def _binned(name: str, factor: str, s: Tensor, value: Tensor, lo: float, hi: float) -> list[dict[str, object]]:
    """Mean certainty in 9 equal-width bins of ``value`` over [lo, hi] (for plots)."""
    edges = np.linspace(lo, hi, 10)
    bins = np.digitize(value.numpy(), edges[1:-1])
    return [{"score": name, "factor": factor, "level": float((edges[b] + edges[b + 1]) / 2),
             "mean": float(s[torch.from_numpy(bins == b)].mean())} for b in range(9)]


def _random_crops(scores_of: _Pass, x: Tensor, seed: int, boots: int) -> Tables:
    gen = torch.Generator().manual_seed(seed)
    area = 0.1 + 0.9 * torch.rand(x.shape[0], generator=gen, dtype=torch.float64)  # (N,)
    scores = scores_of(crop_area(x, area.float(), gen))
    rows = [_row(name, "crop area", spearman_ci(s, area, boots=boots, seed=seed)) for name, s in scores.items()]
    levels = [row for name, s in scores.items() for row in _binned(name, "crop area", s, area, 0.1, 1.0)]
    return rows, levels, []


def _centre_crops(scores_of: _Pass, x: Tensor, clean: dict[str, Tensor], seed: int, boots: int) -> Tables:
    gen = torch.Generator().manual_seed(seed + 1)
    side = 0.25 + 0.75 * torch.rand(x.shape[0], generator=gen, dtype=torch.float64)  # (N,)
    scores = scores_of(centre_crop(x, side.float()))
    n = x.shape[0]
    rows = [_row(name, "centre crop side", spearman_ci(s, side, boots=boots, seed=seed)) for name, s in scores.items()]
    levels = [row for name, s in scores.items() for row in _binned(name, "centre crop side", s, side, 0.25, 1.0)]
    per = [_stat(name, "centre crop side", "less certain than the full image", less_certain_rate(s, clean[name]), n)
           for name, s in scores.items()]
    return rows, levels, per


def _corruptions(scores_of: _Pass, x: Tensor, clean: dict[str, Tensor], seed: int, boots: int) -> Tables:
    n = x.shape[0]
    rows: list[dict[str, object]] = []
    levels: list[dict[str, object]] = []
    per: list[dict[str, object]] = []
    for ci, cname in enumerate(CORRUPTIONS):
        per_level = [clean] + [scores_of(corrupt(x, cname, sev, seed=seed * 1000 + ci * 10 + sev))
                               for sev in range(1, SEVERITIES + 1)]
        for name in clean:
            by_sev = torch.stack([lv[name] for lv in per_level])  # (L, N)
            sev = torch.arange(SEVERITIES + 1).repeat_interleave(n)
            group = torch.arange(n).repeat(SEVERITIES + 1)
            rows.append(_row(name, cname, spearman_ci(by_sev.flatten(), sev, groups=group, boots=boots, seed=seed)))
            levels += [{"score": name, "factor": cname, "level": lv, "mean": float(by_sev[lv].mean())}
                       for lv in range(SEVERITIES + 1)]
            per.append(_stat(name, cname, f"falls from severity 0 to {SEVERITIES}",
                             less_certain_rate(by_sev[-1], by_sev[0]), n))
            per.append(_stat(name, cname, "mean per-image Spearman", float(np.nanmean(per_image_spearman(by_sev))), n))
    return rows, levels, per
