"""Where sampling matters: the Monte-Carlo likelihood (``mc_infonce``) against its deterministic surrogate
(``shrinkage_nt_xent_global``: NT-Xent on the posterior means ρμ) at the same (μ, κ), as the sphere's
dimension D and the concentrations' scale vary.

For each D the inputs are the known process's own posteriors on held-out (validation) observations and their
positive pairs: μ*, and κ* times a scale c. Two numbers per cell: the gap in nats between the two losses
(MC minus surrogate, mean over anchors), and the Pearson correlation over views of their gradients in log κ —
1 where the surrogate moves κ the way the likelihood does, near 0 where it does not. As κ grows against D,
ρ = κ / (κ + D − 1) → 1 and both losses tend to NT-Xent on μ: the gap and the disagreement vanish.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probclr.model.losses import mc_infonce, shrinkage_nt_xent_global
from studies.controlled.process import Posterior, ProcessConfig, positive_pairs

DIMS = (4, 8, 16, 32, 64, 128)
SCALES = (0.25, 1.0, 4.0, 16.0, 64.0)


def _log_kappa_grad(loss_fn: Any, mu_a: Tensor, mu_b: Tensor, log_k: Tensor) -> tuple[float, Tensor]:
    log_k = log_k.clone().requires_grad_(True)  # (2B,)
    k_a, k_b = torch.exp(log_k).chunk(2)
    loss = loss_fn(mu_a, k_a, mu_b, k_b)
    (grad,) = torch.autograd.grad(loss, log_k)
    return float(loss.detach()), grad  # (2B,)


def regime_cell(post: Posterior, scale: float, batches: int, batch: int, samples: int, seed: int
                ) -> dict[str, float]:
    """Gap (nats) and log-kappa gradient correlation of the two losses at (mu*, scale x kappa*)."""
    gen = torch.Generator().manual_seed(seed)
    tau = 1 / post.cfg.kappa_pos
    gaps, corrs = [], []
    for _ in range(batches):
        xa, xb = positive_pairs(post, batch, gen)
        (mu_a, k_a), (mu_b, k_b) = post(xa), post(xb)  # (B, D), (B,) each
        log_k = torch.log(scale * torch.cat([k_a, k_b]))  # (2B,)
        torch.manual_seed(seed)
        mc, g_mc = _log_kappa_grad(lambda a, ka, b, kb: mc_infonce(a, ka, b, kb, tau, samples), mu_a, mu_b, log_k)
        sh, g_sh = _log_kappa_grad(lambda a, ka, b, kb: shrinkage_nt_xent_global(a, ka, b, kb, tau), mu_a, mu_b, log_k)
        gaps.append(mc - sh)
        corrs.append(float(np.corrcoef(g_mc.numpy(), g_sh.numpy())[0, 1]))
    return {"gap_nats": float(np.mean(gaps)), "grad_corr": float(np.mean(corrs))}


def regime_map(dims: tuple[int, ...] = DIMS, scales: tuple[float, ...] = SCALES, batches: int = 4, batch: int = 256,
               samples: int = 64, seed: int = 0, process: ProcessConfig | None = None) -> list[dict[str, Any]]:
    """One row per (D, scale): D, scale, the range of kappa used, the mean rho, the gap and the correlation."""
    base = process or ProcessConfig()
    rows = []
    for d in dims:
        post = Posterior(replace(base, dim_z=d, hidden=max(base.hidden, 2 * d)), torch.Generator().manual_seed(seed))
        x = torch.rand(2000, base.dim_x, generator=torch.Generator().manual_seed(seed + 2))  # validation stream
        kappa = post(x)[1]
        for c in scales:
            k = c * kappa
            rho = float((k / (k + d - 1)).mean())
            cell = regime_cell(post, c, batches, batch, samples, seed)
            rows.append({"dim": d, "scale": c, "kappa_low": float(k.quantile(0.05)),
                         "kappa_high": float(k.quantile(0.95)), "mean_rho": rho, **cell})
    return rows
