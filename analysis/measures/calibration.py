"""Calibration of probes: reliability bins, temperature scaling fitted on held-out labels."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.data.fractions import holdout_split
from probclr.probes.linear import LinearProbe, _standardise, fit_logistic
from probclr.probes.metrics import confidence_bin


def reliability(probs: Tensor, labels: Tensor, bins: int = 15) -> pd.DataFrame:
    """Top-label reliability diagram data: per equal-width confidence bin ((b-1)/M, b/M], the count, mean
    confidence and accuracy (NaN for empty bins). sum_b count_b/N * |acc_b - conf_b| is the ECE."""
    conf, pred = probs.double().max(dim=1)
    correct = (pred == labels).double()
    idx = confidence_bin(conf, bins)
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, correct) / count
    mean_conf = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, conf) / count
    return pd.DataFrame({"bin_low": torch.arange(bins).double().numpy() / bins,
                         "bin_high": (torch.arange(bins).double().numpy() + 1) / bins,
                         "count": count.numpy(), "confidence": mean_conf.numpy(), "accuracy": acc.numpy()})


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """argmin_T NLL(softmax(logits / T)) over T > 0 (Guo et al. 2017), optimised in log T by L-BFGS."""
    logits, labels = logits.double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(1e-2, 1e2))


class HoldoutRefit(NamedTuple):
    """A probe refitted (same weight decay) on (1 - holdout) of its labeled subset, for the choices made on the
    held-out rest (temperature, kappa temperature, posterior scale): fitted once, shared by all of them.
    ``probe`` is None when fewer than 2 labels can be held out."""
    fit_idx: Tensor  # (N_fit,) positions in the labeled subset
    hold_idx: Tensor  # (N_hold,)
    probe: LinearProbe | None

    def holdout_logits(self, x: Tensor) -> Tensor:
        """(N_hold, C) logits of the refitted probe on the held-out rows of ``x`` (the labeled subset)."""
        assert self.probe is not None
        return self.probe.logits(x[self.hold_idx].float())


def holdout_refit(
    x: Tensor, y: Tensor, num_classes: int, probe: LinearProbe, holdout: float, seed: int, max_iter: int = 2000,
) -> HoldoutRefit:
    """Refit ``probe``'s weight decay on (1 - holdout) of the labeled subset (x, y), standardised with that part."""
    fit_idx, hold_idx = holdout_split(y, holdout, seed)
    if hold_idx.numel() < 2:
        return HoldoutRefit(fit_idx, hold_idx, None)
    xf = x[fit_idx].float()
    mean, std = _standardise(xf)
    fit = fit_logistic((xf - mean) / std, y[fit_idx], num_classes, probe.weight_decay, max_iter)
    return HoldoutRefit(fit_idx, hold_idx, LinearProbe(fit.weight, fit.bias, mean, std, probe.weight_decay,
                                                       "holdout refit", fit.iterations, fit.grad_norm, fit.converged))


def heldout_temperature(
    x: Tensor, y: Tensor, num_classes: int, probe: LinearProbe, holdout: float, seed: int, max_iter: int = 2000,
    refit: HoldoutRefit | None = None,
) -> float:
    """The temperature for ``probe`` (fit on all of the labeled subset x, y), estimated without the test set:
    refit the same probe (same weight decay) on (1 - holdout) of the subset and fit T on the held-out rest
    (``refit``: that refit, when the caller already has it)."""
    refit = refit or holdout_refit(x, y, num_classes, probe, holdout, seed, max_iter)
    if refit.probe is None:
        return 1.0
    return fit_temperature(refit.holdout_logits(x), y[refit.hold_idx])
