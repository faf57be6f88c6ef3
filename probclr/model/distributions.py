"""Distributions on the unit sphere S^{d-1}: von Mises-Fisher and Power Spherical.

Both are ``torch.distributions.Distribution`` subclasses with Pyro's ``constraints.sphere`` support, so they
can be used in Pyro models. batch_shape = loc.shape[:-1], event_shape = (d,).

von Mises-Fisher (Mardia & Jupp 2000): p(x) = C_d(kappa) exp(kappa mu^T x),
    log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)
with the stable log-Bessel of :mod:`probclr.model.bessel`. Sampling: Wood (1994)'s rejection sampler; ``rsample`` adds the
implicit reparameterisation gradient of Figurnov, Mohamed & Mnih (2018) to w = mu^T x:
dw/dkappa = -(dF/dkappa) / p(w) with F the CDF of w, computed by quadrature (:func:`vmf_dw_dkappa`).
Power Spherical (De Cao & Aziz 2020): p(x) = N_d(kappa) (1 + mu^T x)^kappa, with
t = mu^T x = 2 Beta(alpha, beta) - 1, alpha = (d-1)/2 + kappa, beta = (d-1)/2: rejection-free and fully
reparameterised (``rsample``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import Tensor
from torch.distributions import Beta, Distribution

from probclr.model.bessel import log_bessel_iv


def _householder_to(loc: Tensor, y: Tensor) -> Tensor:
    """Reflect samples ``y`` (..., d) drawn around e1 so that e1 maps to ``loc`` (..., d)."""
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1.0
    u = e1 - loc
    norm = u.norm(dim=-1, keepdim=True)
    u = torch.where(norm > 1e-8, u / norm.clamp_min(1e-12), torch.zeros_like(u))
    return y - 2 * (y * u).sum(-1, keepdim=True) * u


def _uniform_tangent(shape: torch.Size, d: int, like: Tensor) -> Tensor:
    """Uniform directions on S^{d-2}, shape (*shape, d-1)."""
    v = torch.randn(*shape, d - 1, dtype=like.dtype, device=like.device)
    return F.normalize(v, dim=-1)


class _Spherical(Distribution):
    """Shared parameters of the two families: a mean direction ``loc`` (..., d) and a concentration (...)."""

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    support = constraints.sphere

    def __init__(self, loc: Tensor, concentration: Tensor, validate_args: bool | None = None) -> None:
        self.loc = loc
        self.concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device).expand(loc.shape[:-1])
        self.dim = loc.shape[-1]
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def mean_resultant_length(self) -> Tensor:
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        return self.loc * self.mean_resultant_length().unsqueeze(-1)

    def kl_to_uniform(self) -> Tensor:
        """KL(self || Uniform(S^{d-1})) = log |S^{d-1}| - H(self), with |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2)."""
        log_area = math.log(2) + self.dim / 2 * math.log(math.pi) - math.lgamma(self.dim / 2)
        return log_area - self.entropy()


_GL_NODES, _GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(64))  # on [-1, 1]


def vmf_dw_dkappa(w: Tensor, kappa: Tensor, d: int, mean_w: Tensor) -> Tensor:
    """The implicit reparameterisation gradient dw/dkappa of w = mu^T x, x ~ vMF(mu, kappa) on S^{d-1}.

    w has density q(t) / Z with q(t) = exp(kappa t) (1 - t^2)^((d-3)/2) on (-1, 1). With the CDF F(w; kappa),
    dF/dkappa = int_{-1}^{w} (t - E[t]) q(t) dt / Z = -int_{w}^{1} (t - E[t]) q(t) dt / Z, so
    dw/dkappa = -(dF/dkappa) / (q(w) / Z) = int_w^1 (t - E[t]) q(t) / q(w) dt,
    by 64-point Gauss-Legendre on [w, 1] in float64 (the ratio q(t) / q(w) in log space). ``mean_w`` is E[t]
    = A_d(kappa). All (...,) tensors; returns (...,) float64. Verified against SciPy's ``quad``.
    """
    w, kappa, mean_w = w.double(), kappa.double(), mean_w.double()
    s = _GL_NODES.to(w.device).view(*([1] * w.ndim), -1) * 0.5 + 0.5  # (..., G) in (0, 1)
    half = (1 - w).unsqueeze(-1)  # (..., 1)
    t = w.unsqueeze(-1) + half * s  # (..., G) nodes on (w, 1)
    ex = (d - 3) / 2
    log_ratio = kappa.unsqueeze(-1) * (t - w.unsqueeze(-1)) + ex * (
        torch.log1p(-t * t) - torch.log1p(-w * w).unsqueeze(-1))  # log q(t) - log q(w)
    f = (t - mean_w.unsqueeze(-1)) * torch.exp(log_ratio)  # (..., G)
    return 0.5 * half.squeeze(-1) * (f * _GL_WEIGHTS.to(w.device)).sum(-1)


class VonMisesFisher(_Spherical):
    """The von Mises-Fisher distribution on the unit sphere (mean direction, concentration)."""
    has_rsample = True

    def log_normalizer(self) -> Tensor:
        """log C_d(kappa), (batch,)."""
        nu = self.dim / 2 - 1
        k = self.concentration
        return nu * torch.log(k) - (self.dim / 2) * math.log(2 * math.pi) - log_bessel_iv(nu, k)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.log_normalizer() + self.concentration * (self.loc * value).sum(-1)

    def mean_resultant_length(self) -> Tensor:
        """A_d(kappa) = E[mu^T x] = I_{d/2}(kappa) / I_{d/2-1}(kappa), in [0, 1)."""
        nu = self.dim / 2 - 1
        return torch.exp(log_bessel_iv(nu + 1, self.concentration) - log_bessel_iv(nu, self.concentration))

    def entropy(self) -> Tensor:
        return -self.log_normalizer() - self.concentration * self.mean_resultant_length()

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Wood (1994): w = mu^T x by rejection from a Beta proposal, then a uniform tangent direction."""
        shape = torch.Size(sample_shape) + self.batch_shape
        return self._embed(self._sample_w(shape).to(self.loc.dtype), shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Wood's draws with gradients: in ``loc`` through the rotation, in kappa by implicit
        reparameterisation (w + (kappa - sg(kappa)) dw/dkappa, whose value is w and whose derivative is exact)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        w = self._sample_w(shape)  # (*shape,) float64, no gradient
        k = self.concentration.expand(shape)
        with torch.no_grad():
            grad = vmf_dw_dkappa(w, k, self.dim, self.mean_resultant_length().expand(shape))  # (*shape,)
        w = w.to(self.loc.dtype) + (k - k.detach()) * grad.to(self.loc.dtype)  # value w, dw/dkappa = grad
        return self._embed(w.clamp(-1.0, 1.0), shape)

    def _embed(self, w: Tensor, shape: torch.Size) -> Tensor:
        """w (*shape,) and a uniform tangent direction -> points (*shape, d) around ``loc``."""
        w = w.unsqueeze(-1)
        v = _uniform_tangent(shape, self.dim, self.loc)
        y = torch.cat([w, torch.sqrt((1 - w * w).clamp_min(0)) * v], dim=-1)
        return _householder_to(self.loc.expand(shape + (self.dim,)), y)

    @torch.no_grad()
    def _sample_w(self, shape: torch.Size) -> Tensor:
        """Wood (1994)'s rejection sampler for w = mu^T x, (*shape,) float64."""
        d = self.dim
        k = self.concentration.detach().double().expand(shape)
        b = (d - 1) / (2 * k + torch.sqrt(4 * k * k + (d - 1) ** 2))  # = (-2k + sqrt(4k^2 + (d-1)^2)) / (d-1)
        x0 = (1 - b) / (1 + b)
        c = k * x0 + (d - 1) * torch.log(1 - x0 * x0)
        half = torch.tensor((d - 1) / 2, dtype=torch.float64, device=k.device)
        beta = Beta(half, half)
        w = torch.zeros_like(k)
        todo = torch.ones_like(k, dtype=torch.bool)
        while bool(todo.any()):
            z = beta.sample(k.shape)
            cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
            u = torch.rand_like(k)
            ok = k * cand + (d - 1) * torch.log(1 - x0 * cand) - c >= torch.log(u)
            w = torch.where(todo & ok, cand, w)
            todo = todo & ~ok
        return w


class PowerSpherical(_Spherical):
    """The Power Spherical distribution (De Cao & Aziz 2020): vMF-like, with exact reparameterised samples."""
    has_rsample = True

    @property
    def _alpha_beta(self) -> tuple[Tensor, Tensor]:
        beta = torch.full_like(self.concentration, (self.dim - 1) / 2)
        return beta + self.concentration, beta

    def log_normalizer(self) -> Tensor:
        """log N_d(kappa) = -[(alpha + beta) log 2 + beta log pi + lgamma(alpha) - lgamma(alpha + beta)]."""
        a, b = self._alpha_beta
        return -((a + b) * math.log(2) + b * math.log(math.pi) + torch.lgamma(a) - torch.lgamma(a + b))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        t = (self.loc * value).sum(-1)
        return self.log_normalizer() + self.concentration * torch.log1p(t.clamp_min(-1 + 1e-12))

    def mean_resultant_length(self) -> Tensor:
        a, b = self._alpha_beta
        return (a - b) / (a + b)

    def entropy(self) -> Tensor:
        a, b = self._alpha_beta
        return -(self.log_normalizer() + self.concentration * (math.log(2) + torch.digamma(a) - torch.digamma(a + b)))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        shape = torch.Size(sample_shape) + self.batch_shape
        a, b = self._alpha_beta
        z = Beta(a, b).rsample(torch.Size(sample_shape))  # (*shape,), reparameterised in kappa
        t = (2 * z - 1).unsqueeze(-1)
        v = _uniform_tangent(shape, self.dim, self.loc)
        y = torch.cat([t, torch.sqrt((1 - t * t).clamp_min(0)) * v], dim=-1)
        return _householder_to(self.loc.expand(shape + (self.dim,)), y)
