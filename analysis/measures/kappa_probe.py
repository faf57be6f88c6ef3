"""A kappa-aware probe: embedding uncertainty carried into the class probabilities.

The linear probe's logits are divided by a per-image temperature that depends on the image's concentration,
T_i = T0 * exp(b * (log kappa_i - c)), c the mean log kappa of the fitting images; (T0, b) are fitted by NLL
on the labeled holdout (the same refit-on-the-rest protocol as plain temperature scaling), never on the test
set. With b = 0 it is temperature scaling; with a constant kappa the kappa term vanishes and it is exactly
temperature scaling (and, with T0 = 1, the plain probe). b < 0 means: less certain embeddings, softer
predictions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from analysis.measures.calibration import HoldoutRefit, holdout_refit
from probclr.probes.linear import LinearProbe


class KappaTemperature(NamedTuple):
    """A per-image temperature t0 * exp(b * (log kappa - center)) fitted on held-out labels."""
    t0: float
    b: float
    center: float  # mean log kappa of the images it was fitted on

    def scale(self, kappa: Tensor) -> Tensor:
        """(N,) per-image temperatures."""
        return self.t0 * torch.exp(self.b * (kappa.double().log() - self.center))

    def probs(self, logits: Tensor, kappa: Tensor) -> Tensor:
        return torch.softmax(logits.double() / self.scale(kappa)[:, None], dim=1)  # (N, C)


def fit_kappa_temperature(logits: Tensor, labels: Tensor, kappa: Tensor, max_iter: int = 200) -> KappaTemperature:
    """argmin over (log T0, b) of the NLL of softmax(logits / T_i), by L-BFGS."""
    z, y = logits.double(), labels.long()
    lk = kappa.double().log()
    center = float(lk.mean())
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # log T0, b
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        t = torch.exp(params[0] + params[1] * (lk - center))  # (N,)
        loss = F.cross_entropy(z / t[:, None], y)
        loss.backward()
        return loss

    opt.step(closure)
    log_t0, b = params.detach().tolist()
    return KappaTemperature(float(torch.tensor(log_t0).exp().clamp(1e-2, 1e2)), float(b), center)


def heldout_kappa_temperature(
    x: Tensor, y: Tensor, kappa: Tensor, num_classes: int, probe: LinearProbe, holdout: float, seed: int,
    max_iter: int = 2000, refit: HoldoutRefit | None = None,
) -> KappaTemperature:
    """(T0, b) for ``probe`` without the test set: refit the probe (same weight decay) on (1 - holdout) of the
    labeled subset and fit (T0, b) on the held-out rest with its kappas (``refit``: that refit, if at hand)."""
    refit = refit or holdout_refit(x, y, num_classes, probe, holdout, seed, max_iter)
    if refit.probe is None:
        return KappaTemperature(1.0, 0.0, float(kappa.double().log().mean()))
    return fit_kappa_temperature(refit.holdout_logits(x), y[refit.hold_idx], kappa[refit.hold_idx])
