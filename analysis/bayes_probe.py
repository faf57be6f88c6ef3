"""A Bayesian linear probe: the Laplace approximation of the softmax-regression posterior at its MAP.

Prior W ~ N(0, 1 / (N wd)) per entry (the prior whose MAP is the L-BFGS probe with weight decay wd: its
objective is mean CE + wd/2 ||W||^2) and b ~ N(0, 10^2). The posterior is approximated by a Gaussian
centred exactly on the converged MAP, with precision = the exact Hessian of the negative log posterior
(MacKay 1992; Ritter et al. 2018): sum_i (diag p_i - p_i p_i^T) (x) x~_i x~_i^T plus the prior
precision, x~ = (x, 1). The posterior is a Pyro ``MultivariateNormal``; predictions average the softmax
over its draws. This replaced a mean-field SVI fit (one particle, constant lr, last iterate), which lost
1.5-2 accuracy points and drifted 20-26 % from the MAP (BENCHMARKS §2b).

The posterior covariance is scaled by ``scale`` (a posterior temperature, Wenzel et al. 2020): with few
labels and many features the Laplace spread can average the softmax over weights that disagree with the
data, costing accuracy. :func:`heldout_posterior_scale` chooses the scale from ``POSTERIOR_SCALES`` by the
predictive NLL on a held-out part of the labeled subset (the protocol of the temperature); scale 0 is the
MAP probe itself, so the holdout can only keep it or find a better predictive.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import Tensor

from analysis.calibration import HoldoutRefit, holdout_refit
from probclr.probes.linear import LinearProbe

BIAS_PRIOR_STD = 10.0
POSTERIOR_SCALES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def softmax_hessian(x1: Tensor, probs: Tensor, chunk: int = 4096) -> Tensor:
    """Hessian of sum_i CE(x1_i V, y_i) in vec(V), V (D+1, C) flattened row-major (index d * C + c).

    x1: (N, D+1) inputs with a trailing 1; probs: (N, C) softmax at V. Returns (P, P), P = (D+1) C, float64:
    H[(d,c),(e,k)] = sum_i x_id x_ie p_ic (delta_ck - p_ik).
    """
    n, d1 = x1.shape
    c = probs.shape[1]
    h = torch.zeros(d1, c, d1, c, dtype=torch.float64)  # (D+1, C, D+1, C)
    for xs, ps in zip(x1.double().split(chunk), probs.double().split(chunk), strict=True):
        for a in range(c):
            for k in range(a, c):
                wgt = ps[:, a] * (float(a == k) - ps[:, k])  # (n,)
                block = (xs * wgt[:, None]).T @ xs  # (D+1, D+1)
                h[:, a, :, k] += block
                if k != a:
                    h[:, k, :, a] += block
    return h.reshape(d1 * c, d1 * c)


class BayesianProbe:
    """Posterior-predictive softmax regression on the MAP probe's standardised features."""

    def __init__(self, x: Tensor, y: Tensor, num_classes: int, map_probe: LinearProbe, scale: float = 1.0) -> None:
        if not scale >= 0:
            raise ValueError(f"posterior scale must be >= 0, got {scale}")
        self.scale = scale
        self.mean, self.std = map_probe.mean, map_probe.std
        xs = (x.float() - self.mean) / self.std  # (N, D)
        n, d = xs.shape
        x1 = torch.cat([xs, torch.ones(n, 1)], dim=1)  # (N, D+1)
        loc = torch.cat([map_probe.weight, map_probe.bias[None]], dim=0).double()  # (D+1, C)
        probs = torch.softmax(x1.double() @ loc, dim=1)  # (N, C)
        prior = torch.full((d + 1, num_classes), n * map_probe.weight_decay, dtype=torch.float64)
        prior[-1] = 1.0 / BIAS_PRIOR_STD**2
        precision = softmax_hessian(x1, probs) + torch.diag(prior.reshape(-1))  # (P, P)
        # the softmax Hessian is singular along "add a constant to every class": the prior regularises it
        self.posterior = dist.MultivariateNormal(loc.reshape(-1), precision_matrix=precision)
        self.shape = (d + 1, num_classes)
        self.sigma = 1.0 / math.sqrt(n * map_probe.weight_decay) if map_probe.weight_decay > 0 else math.inf

    @property
    def loc(self) -> tuple[Tensor, Tensor]:
        """Posterior mean (W (D, C), b (C,)): the MAP, by construction."""
        v = self.posterior.loc.reshape(self.shape)
        return v[:-1].float(), v[-1].float()

    @torch.no_grad()
    def probs(self, x: Tensor, draws: int = 64, seed: int = 0, scale: float | None = None) -> Tensor:
        """(N, C): the softmax averaged over ``draws`` posterior samples of (W, b), the covariance scaled by
        ``scale`` (default: the probe's own; 0: the MAP's softmax)."""
        scale = self.scale if scale is None else scale
        gen = torch.Generator().manual_seed(seed)
        x1 = torch.cat([(x.float() - self.mean) / self.std, torch.ones(x.shape[0], 1)], dim=1).double()  # (N, D+1)
        if scale == 0:
            return torch.softmax(x1 @ self.posterior.loc.reshape(self.shape), dim=1)
        eps = torch.randn(draws, self.posterior.loc.numel(), generator=gen, dtype=torch.float64)  # (S, P)
        samples = self.posterior.loc + math.sqrt(scale) * eps @ self.posterior.scale_tril.T  # (S, P)
        out = torch.zeros(x.shape[0], self.shape[1], dtype=torch.float64)
        for v in samples:
            out += torch.softmax(x1 @ v.reshape(self.shape), dim=1)
        return out / draws


def heldout_posterior_scale(
    x: Tensor, y: Tensor, num_classes: int, probe: LinearProbe, holdout: float, seed: int, max_iter: int = 2000,
    refit: HoldoutRefit | None = None,
) -> float:
    """The posterior scale for the Laplace probe of ``probe``, chosen without the test set: refit the MAP
    (same weight decay) on (1 - holdout) of the labeled subset (``refit``, if at hand), build its Laplace
    posterior, and keep the scale of ``POSTERIOR_SCALES`` with the lowest predictive NLL on the held-out rest
    (ties: the smaller)."""
    refit = refit or holdout_refit(x, y, num_classes, probe, holdout, seed, max_iter)
    if refit.probe is None:
        return 1.0
    laplace = BayesianProbe(x[refit.fit_idx], y[refit.fit_idx], num_classes, refit.probe)
    yh = y[refit.hold_idx].long().view(-1, 1)

    def nll(scale: float) -> float:
        p = laplace.probs(x[refit.hold_idx], seed=seed, scale=scale)  # (N_hold, C)
        return float(-p.gather(1, yh).clamp_min(1e-12).log().mean())

    return min(POSTERIOR_SCALES, key=lambda s: (round(nll(s), 6), s))
