"""A Bayesian linear probe in Pyro: a Gaussian prior on the weights, a mean-field Gaussian posterior fitted
by SVI (minibatched, so it scales to every label fraction), predictions averaged over posterior draws."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from torch import Tensor

from probclr.probes import LinearProbe


class BayesianProbe:
    """Posterior-predictive softmax regression on standardised features.

    Prior: W ~ N(0, sigma^2) with sigma^2 = 1 / (N * wd), the prior whose MAP is the L-BFGS probe with
    weight decay wd (its objective is mean CE + wd/2 ||W||^2); bias ~ N(0, 10^2). The guide starts at that
    MAP solution, so SVI mainly learns the posterior spread.
    """

    def __init__(self, x: Tensor, y: Tensor, num_classes: int, map_probe: LinearProbe, steps: int = 1000,
                 batch_size: int = 1024, lr: float = 0.01, seed: int = 0) -> None:
        self.mean, self.std = map_probe.mean, map_probe.std
        xs = ((x.float() - self.mean) / self.std).contiguous()
        n, d = xs.shape
        sigma = 1.0 / math.sqrt(n * map_probe.weight_decay)
        self.sigma = sigma
        sub = min(n, batch_size)

        def model(xb: Tensor, yb: Tensor | None = None) -> None:
            w = pyro.sample("w", dist.Normal(0.0, sigma).expand([d, num_classes]).to_event(2))
            b = pyro.sample("b", dist.Normal(0.0, 10.0).expand([num_classes]).to_event(1))
            with pyro.plate("data", n, subsample_size=sub) as idx:
                pyro.sample("y", dist.Categorical(logits=xb[idx] @ w + b), obs=None if yb is None else yb[idx])

        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        init = init_to_value(values={"w": map_probe.weight.float().clone(), "b": map_probe.bias.float().clone()})
        self.guide = AutoNormal(model, init_loc_fn=init, init_scale=0.01)
        svi = SVI(model, self.guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
        self.elbo: list[float] = [svi.step(xs, y) for _ in range(steps)]
        loc = pyro.param("AutoNormal.locs.w").detach().clone(), pyro.param("AutoNormal.locs.b").detach().clone()
        scale = pyro.param("AutoNormal.scales.w").detach().clone(), pyro.param("AutoNormal.scales.b").detach().clone()
        self.loc, self.scale = loc, scale
        pyro.clear_param_store()

    @torch.no_grad()
    def probs(self, x: Tensor, draws: int = 64, seed: int = 0) -> Tensor:
        """(N, C): the softmax averaged over ``draws`` posterior samples of (W, b)."""
        gen = torch.Generator().manual_seed(seed)
        xs = (x.float() - self.mean) / self.std
        out = torch.zeros(x.shape[0], self.loc[0].shape[1], dtype=torch.float64)
        for _ in range(draws):
            w = self.loc[0] + self.scale[0] * torch.randn(self.loc[0].shape, generator=gen)
            b = self.loc[1] + self.scale[1] * torch.randn(self.loc[1].shape, generator=gen)
            out += torch.softmax(xs @ w + b, dim=1).double()
        return out / draws
