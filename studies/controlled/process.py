"""A data-generating process whose posteriors are known: the ground truth of ``probclr controlled``.

After the controlled experiment of Kirchhof, Kasneci & Oh (ICML 2023, Sec. 4.1), written here from its
description: observations x ~ U[0, 1]^dx; each x has a true posterior over latents on the sphere,
p(z | x) = vMF(mu*(x), kappa*(x)), from two fixed random maps; a positive pair is two observations whose
latents were drawn close to each other, p(x+ | x) ∝ p(x+) E[exp(kappa_pos z . z+)] -- the generative model
that InfoNCE with temperature 1 / kappa_pos assumes. An encoder trained on such pairs should recover mu* up
to a rotation and kappa* (the paper's claim for MC-InfoNCE); kappa* is the per-input ambiguity to recover.

- mu*(x): a random tanh MLP, centred and whitened over a calibration sample, then normalised, so the means
  cover the whole sphere about evenly.
- kappa*(x): log-linear in a random projection of x, rescaled so that the calibration sample's 0.5 % and
  99.5 % quantiles land on ``kappa_range``'s ends (and clipped there).
- Pairs: each anchor's latent z is drawn from its posterior; its partner is drawn by sampling-importance-
  resampling from a fresh pool of candidate observations with drawn latents z_c, with weights
  exp(kappa_pos z . z_c) (a pool per batch of anchors; no candidate is taken twice in one batch, so a batch
  holds no duplicate views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.model.distributions import VonMisesFisher


@dataclass(frozen=True)
class ProcessConfig:
    """The generating process: dimensions, the range of true concentrations, the pairing concentration."""
    dim_x: int = 10  # observations x in [0, 1]^dim_x
    dim_z: int = 10  # latents on S^(dim_z - 1)
    hidden: int = 64  # width of mu*'s two hidden tanh layers
    kappa_min: float = 4.0  # range of the true posterior concentrations kappa*(x)
    kappa_max: float = 64.0
    kappa_pos: float = 20.0  # positives: p(z+ | z) ∝ exp(kappa_pos z . z+); the loss temperature is 1 / kappa_pos
    pool: int = 4096  # candidate observations per batch of anchors (sampling-importance-resampling)


class Posterior(torch.nn.Module):
    """x (N, dim_x) -> the true posterior's mean direction (N, dim_z) and concentration (N,). Fixed, seeded."""

    def __init__(self, cfg: ProcessConfig, gen: torch.Generator) -> None:
        super().__init__()
        self.cfg = cfg
        shapes = [(cfg.dim_x, cfg.hidden), (cfg.hidden, cfg.hidden), (cfg.hidden, cfg.dim_z)]
        self.weights = [torch.randn(i, o, generator=gen) / math.sqrt(i) for i, o in shapes]
        self.biases = [torch.randn(o, generator=gen) * 0.5 for _, o in shapes]
        self.kappa_dir = torch.randn(cfg.dim_x, generator=gen) / math.sqrt(cfg.dim_x)  # (dim_x,)
        calib = torch.rand(8192, cfg.dim_x, generator=gen)  # (C, dim_x)
        raw = self._raw_mu(calib)  # (C, dim_z)
        self.centre = raw.mean(0)  # (dim_z,)
        self.whiten = torch.linalg.cholesky(torch.linalg.inv(torch.cov((raw - self.centre).T)))  # (dim_z, dim_z)
        s = self._score(calib)  # (C,)
        self.s_low, self.s_high = s.quantile(0.005), s.quantile(0.995)

    @staticmethod
    def _standard(x: Tensor) -> Tensor:
        return (2 * x - 1) * math.sqrt(3)  # U[0, 1] -> mean 0, variance 1

    def _raw_mu(self, x: Tensor) -> Tensor:
        h = self._standard(x)  # (N, dim_x)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            h = torch.tanh(h) if i < len(self.weights) - 1 else h
        return h  # (N, dim_z)

    def _score(self, x: Tensor) -> Tensor:
        return self._standard(x) @ self.kappa_dir  # (N,)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = F.normalize((self._raw_mu(x) - self.centre) @ self.whiten, dim=1)  # (N, dim_z)
        t = ((self._score(x) - self.s_low) / (self.s_high - self.s_low)).clamp(0, 1)  # (N,)
        lo, hi = math.log(self.cfg.kappa_min), math.log(self.cfg.kappa_max)
        return mu, torch.exp(lo + (hi - lo) * t)  # (N, dim_z), (N,)

    def draw(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """One latent per observation from its true posterior: (N, dim_z)."""
        mu, kappa = self(x)
        return _vmf_draw(mu, kappa, gen)


def _vmf_draw(mu: Tensor, kappa: Tensor, gen: torch.Generator) -> Tensor:
    # probclr's sampler draws from torch's global stream: run it under a fork seeded from ``gen`` so that
    # the process is a function of its own generator alone
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VonMisesFisher(mu, kappa).sample()  # (N, dim_z)


def observations(n: int, dim_x: int, gen: torch.Generator) -> Tensor:
    """n observations x ~ U[0, 1]^dim_x: (n, dim_x)."""
    return torch.rand(n, dim_x, generator=gen)


def positive_pairs(post: Posterior, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """n anchors and their partners, (n, dim_x) each, drawn from the generative process (module docstring)."""
    cfg = post.cfg
    if cfg.pool < n:
        raise ValueError(f"the candidate pool ({cfg.pool}) must hold at least one partner per anchor ({n})")
    x = observations(n, cfg.dim_x, gen)  # (n, dim_x)
    z = post.draw(x, gen)  # (n, dim_z)
    cand = observations(cfg.pool, cfg.dim_x, gen)  # (P, dim_x)
    logits = cfg.kappa_pos * z @ post.draw(cand, gen).T  # (n, P)
    return x, cand[_distinct_choices(logits, gen)]


def _distinct_choices(logits: Tensor, gen: torch.Generator) -> Tensor:
    """One candidate per row, row i's drawn with probabilities softmax(logits[i]) (Gumbel-max), no candidate
    given twice: a row whose draw was taken by an earlier row draws again among the candidates left. (n,)"""
    n = logits.shape[0]
    choice = torch.full((n,), -1, dtype=torch.long)
    taken = torch.zeros(logits.shape[1], dtype=torch.bool)
    todo = torch.arange(n)
    while todo.numel():
        u = torch.rand(todo.numel(), logits.shape[1], generator=gen).clamp_min(1e-20)  # (T, P)
        pick = (logits[todo].masked_fill(taken, float("-inf")) - torch.log(-torch.log(u))).argmax(1)  # (T,)
        first = torch.ones_like(pick, dtype=torch.bool)
        seen: set[int] = set()
        for i, p in enumerate(pick.tolist()):  # keep the first row that drew each candidate
            first[i] = p not in seen
            seen.add(p)
        choice[todo[first]] = pick[first]
        taken[pick[first]] = True
        todo = todo[~first]
    return choice
