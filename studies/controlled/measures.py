"""What the controlled study measures against the known truth: kappa's ranking, mu up to a rotation, and the
calibration of the predicted posterior (coverage of its credible regions by the true latents)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import Tensor

FAMILIES = ("power_spherical", "vmf")
LEVELS = (0.5, 0.8, 0.9, 0.95)  # credible levels whose coverage is measured


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two (N,) tensors."""
    return float(stats.spearmanr(a.double().numpy(), b.double().numpy())[0])


def pairwise_cosine_spearman(mu_hat: Tensor, mu_true: Tensor, points: int = 1000) -> float:
    """mu recovered up to a rotation, as the official code measures it: the Spearman correlation of the pairwise
    cosines of the first ``points`` inputs under the encoder and under the truth (any rotation keeps them)."""
    a, b = mu_hat[:points].double(), mu_true[:points].double()  # (P, D), (P, D')
    upper = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
    return spearman((a @ a.T)[upper[0], upper[1]], (b @ b.T)[upper[0], upper[1]])


def procrustes(source: Tensor, target: Tensor) -> Tensor:
    """The orthogonal R (D, D) minimising ||source R - target||_F (Schönemann 1966): R = U V^T from the SVD
    of source^T target. source, target: (N, D)."""
    u, _, vh = torch.linalg.svd(source.double().T @ target.double())
    return u @ vh  # (D, D)


def procrustes_r2(mu_hat: Tensor, mu_true: Tensor) -> tuple[float, Tensor]:
    """R² of mu_hat explained by the best rotation of mu_true, the rotation fitted on the first half of the
    inputs and scored on the second; also the rotation (D, D), truth -> encoder space."""
    half = mu_hat.shape[0] // 2
    rot = procrustes(mu_true[:half], mu_hat[:half])  # (D, D)
    pred, obs = mu_true[half:].double() @ rot, mu_hat[half:].double()  # (N/2, D) each
    resid = ((obs - pred) ** 2).sum()
    total = ((obs - obs.mean(0)) ** 2).sum()
    return float(1 - resid / total), rot


def cosine_tail_threshold(kappa: Tensor, dim: int, family: str, level: float, grid: int = 2000) -> Tensor:
    """t with P(mu . z >= t) = level under PowerSpherical(mu, kappa) or vMF(mu, kappa) on S^(dim-1): the
    boundary of the smallest credible cap. kappa: (N,) -> (N,).

    The density of w = mu . z is ∝ exp(kappa w) (1 - w²)^((dim-3)/2) for the vMF and ∝ (1 + w)^kappa
    (1 - w²)^((dim-3)/2) for the Power Spherical (De Cao & Aziz 2020). It is integrated numerically on a grid
    of u = 1 - w spaced evenly in log u (dense where a concentrated density lives), from w = 1 downward.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    log_u = torch.linspace(math.log(1e-9), math.log(2.0), grid, dtype=torch.float64)  # (G,)
    u = torch.exp(log_u)
    w = 1 - u  # (G,) from near 1 down to -1
    k = kappa.double().unsqueeze(1)  # (N, 1)
    base = (dim - 3) / 2 * torch.log((u * (2 - u)).clamp_min(1e-300))  # log(1 - w²), (G,)
    log_f = (k * w if family == "vmf" else k * torch.log((2 - u).clamp_min(1e-300))) + base  # (N, G)
    log_mass = log_f + log_u  # dw = u d(log u)
    mass = torch.exp(log_mass - log_mass.max(1, keepdim=True).values)  # (N, G)
    step = (mass[:, 1:] + mass[:, :-1]) / 2  # trapezoid per cell, (N, G-1)
    cdf = torch.cat([torch.zeros_like(step[:, :1]), step.cumsum(1)], 1)  # P(w >= 1 - u), unnormalised (N, G)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, torch.full((cdf.shape[0], 1), level, dtype=torch.float64)).clamp(1, grid - 1)
    lo, hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)  # (N, 1)
    frac = ((level - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
    log_u_t = log_u[idx - 1] + frac * (log_u[idx] - log_u[idx - 1])  # linear in log u within the cell
    return (1 - torch.exp(log_u_t)).squeeze(1).float()


def coverage(mu_hat: Tensor, kappa_hat: Tensor, z_true: Tensor, family: str, levels: tuple[float, ...] = LEVELS
             ) -> dict[float, float]:
    """For each level: the share of true latents (already rotated into the encoder's space) inside the predicted
    posterior's credible cap of that level. Calibrated: share = level. mu_hat, z_true: (N, D); kappa_hat: (N,)."""
    w = (mu_hat.double() * z_true.double()).sum(1)  # (N,)
    return {lv: float((w >= cosine_tail_threshold(kappa_hat, mu_hat.shape[1], family, lv).double()).double().mean())
            for lv in levels}


def coverage_error(cov: dict[float, float]) -> float:
    """Mean |coverage - level| over the levels: 0 for a calibrated posterior."""
    return float(np.mean([abs(c - lv) for lv, c in cov.items()]))
