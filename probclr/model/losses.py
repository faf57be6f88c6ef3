"""Contrastive losses, as pure functions computed in log space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from probclr.distributed import dist_info, gather_with_grad, local_rows
from probclr.model.distributions import PowerSpherical, VonMisesFisher


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.5, normalize: bool = True,
            log_weight: Tensor | None = None) -> Tensor:
    """NT-Xent (Chen et al. 2020, Eq. 1), the mean over all 2N anchors.

    "l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)", with sim the cosine
    similarity. z_a, z_b: (N, D) projections of two views of the same N images (normalised here; with
    ``normalize=False`` sim is the plain dot product, as :func:`shrinkage_nt_xent` needs).
    ``log_weight``: (2N, 2N) log w_ik added to the logits, so the denominator is sum_k w_ik exp(sim / tau)
    (label-aware negatives, probclr.data.pairs; 0 on the positives).
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must both have shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent needs N >= 2 pairs (one positive and negatives), got N = {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = torch.cat([z_a, z_b]).float()  # (2N, D), float32 for the softmax
    z = F.normalize(z, dim=1) if normalize else z
    logits = z @ z.T / temperature  # (2N, 2N)
    if log_weight is not None:
        logits = logits + _checked_weight(log_weight, 2 * n)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # k != i
    target = torch.arange(2 * n, device=z.device).roll(n)  # (2N,) view a_i <-> view b_i
    return F.cross_entropy(logits, target)


def _checked_weight(log_weight: Tensor, views: int) -> Tensor:
    if log_weight.shape != (views, views):
        raise ValueError(f"log_weight must have shape ({views}, {views}), got {tuple(log_weight.shape)}")
    if dist_info().world > 1:
        raise ValueError("weighted negatives (log_weight) are computed on one process only")
    return log_weight.float()


def nt_xent_global(z_a: Tensor, z_b: Tensor, temperature: float = 0.5, normalize: bool = True,
                   log_weight: Tensor | None = None) -> Tensor:
    """NT-Xent over the global batch of all ranks, for this rank's anchors, scaled for DDP.

    z_a, z_b: (B, D) this rank's two views. Every rank gathers all (W*B) pairs as candidates and scores
    its own 2B anchors; the sum over ranks of the returned values is W times the global NT-Xent, so that
    DDP's gradient average is exactly the gradient of ``nt_xent`` on the concatenated batch (tested with
    gloo). With one process it is ``nt_xent``.
    """

    info = dist_info()
    if info.world == 1 or log_weight is not None:
        return nt_xent(z_a, z_b, temperature, normalize, log_weight)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = z_a.shape[0]
    za, zb = gather_with_grad(z_a.float()), gather_with_grad(z_b.float())  # (WB, D) each
    if normalize:
        za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    n = za.shape[0]
    z = torch.cat([za, zb])  # (2WB, D): all views a, then all views b
    rows = local_rows(info, b)
    anchors = torch.cat([torch.arange(n)[rows], n + torch.arange(n)[rows]]).to(z.device)  # (2B,)
    logits = z[anchors] @ z.T / temperature  # (2B, 2WB)
    logits[torch.arange(2 * b, device=z.device), anchors] = float("-inf")  # k != i
    target = torch.where(anchors < n, anchors + n, anchors - n)  # the other view of the same image
    return F.cross_entropy(logits, target, reduction="sum") / (2 * n) * info.world


def _check_mc_args(mu_a: Tensor, kappa_a: Tensor, mu_b: Tensor, kappa_b: Tensor, temperature: float, samples: int,
                   kl_weight: float) -> None:
    if mu_a.ndim != 2 or mu_a.shape != mu_b.shape or kappa_a.shape != mu_a.shape[:1] or kappa_b.shape != kappa_a.shape:
        raise ValueError(
            f"need mu_a, mu_b of shape (N, D) and kappa_a, kappa_b of shape (N,), got {tuple(mu_a.shape)}, "
            f"{tuple(mu_b.shape)}, {tuple(kappa_a.shape)}, {tuple(kappa_b.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")


POSTERIORS = ("power_spherical", "vmf")


def _posterior(mu_a: Tensor, kappa_a: Tensor, mu_b: Tensor, kappa_b: Tensor,
               family: str = "power_spherical") -> PowerSpherical | VonMisesFisher:
    """The embedding posteriors of the 2N views, views a then views b, in float32: Power Spherical or
    von Mises-Fisher (both reparameterised)."""
    if family not in POSTERIORS:
        raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {family!r}")
    cls = PowerSpherical if family == "power_spherical" else VonMisesFisher
    return cls(F.normalize(torch.cat([mu_a, mu_b]).float(), dim=1), torch.cat([kappa_a, kappa_b]).float())


def _mc_log_likelihood(z: Tensor, anchors: Tensor | None, temperature: float,
                       log_weight: Tensor | None = None) -> Tensor:
    """log (1/M) sum_m softmax_{pos(i)}(z_i^(m) . z_k^(m) / tau + log w_ik) for each anchor i.

    z: (M, 2n, D) draws of all views a then all views b; anchors: (A,) rows of z, None = all (the only
    choice with ``log_weight``, (2n, 2n)). Returns (A,).
    """
    samples, two_n, _ = z.shape
    n = two_n // 2
    if anchors is None:
        anchors = torch.arange(two_n, device=z.device)
        logits = torch.einsum("mad,mjd->maj", z, z) / temperature  # (M, 2n, 2n)
        if log_weight is not None:
            logits = logits + _checked_weight(log_weight, two_n)  # broadcast over the M draws
    else:
        logits = torch.einsum("mad,mjd->maj", z[:, anchors], z) / temperature  # (M, A, 2n)
    self_mask = anchors.view(-1, 1) == torch.arange(two_n, device=z.device).view(1, -1)  # (A, 2n): k != i
    logits = logits.masked_fill(self_mask, float("-inf"))
    target = torch.where(anchors < n, anchors + n, anchors - n)  # (A,) the other view of the same image
    log_p = torch.log_softmax(logits, dim=2).gather(2, target.view(1, -1, 1).expand(samples, -1, 1)).squeeze(2)
    return torch.logsumexp(log_p, dim=0) - math.log(samples)


def mc_infonce_from_samples(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """The likelihood term of :func:`mc_infonce` given the draws z_a, z_b: (M, N, D) unit vectors."""
    z = torch.cat([z_a, z_b], dim=1)
    return -_mc_log_likelihood(z, None, temperature).mean()


def mc_infonce(
    mu_a: Tensor, kappa_a: Tensor, mu_b: Tensor, kappa_b: Tensor, temperature: float = 0.5, samples: int = 8,
    kl_weight: float = 0.0, posterior: str = "power_spherical", log_weight: Tensor | None = None,
) -> Tensor:
    """Monte-Carlo InfoNCE likelihood (after Kirchhof et al., ICML 2023), the mean over 2N anchors.

    Each view's embedding is uncertain: z ~ PowerSpherical(mu, kappa) (De Cao & Aziz 2020, reparameterised),
    or with ``posterior="vmf"`` z ~ vMF(mu, kappa) (Wood's sampler, implicit reparameterisation).
    Given the embeddings, the positive of anchor i is chosen among the 2N - 1 others with probability
    softmax_k(z_i^T z_k / temperature) -- NT-Xent's model. The likelihood of the observed pairing marginalises
    the embeddings: p_i = E_z[softmax_{pos(i)}], estimated with ``samples`` draws of every embedding, so
    loss_i = -log( (1/M) sum_m exp(log p_i^(m)) ), computed with logsumexp. As kappa -> infinity every draw is
    mu and the loss is exactly ``nt_xent(mu_a, mu_b, temperature)``. See docs/probabilistic_loss.md.
    mu_*: (N, D) unit vectors; kappa_*: (N,) > 0. ``log_weight``: as in :func:`nt_xent`.
    """
    _check_mc_args(mu_a, kappa_a, mu_b, kappa_b, temperature, samples, kl_weight)
    n = mu_a.shape[0]
    if n < 2:
        raise ValueError(f"mc_infonce needs N >= 2 pairs, got N = {n}")
    q = _posterior(mu_a, kappa_a, mu_b, kappa_b, posterior)  # over (2N, D)
    z = q.rsample(torch.Size([samples]))  # (M, 2N, D)
    log_lik = _mc_log_likelihood(z, None, temperature, log_weight)  # (2N,)
    if kl_weight == 0:
        return -log_lik.mean()
    return -log_lik.mean() + kl_weight * q.kl_to_uniform().mean()


def mc_infonce_global(
    mu_a: Tensor, kappa_a: Tensor, mu_b: Tensor, kappa_b: Tensor, temperature: float = 0.5, samples: int = 8,
    kl_weight: float = 0.0, posterior: str = "power_spherical", log_weight: Tensor | None = None,
) -> Tensor:
    """:func:`mc_infonce` over the global batch of all ranks, for this rank's anchors, scaled for DDP.

    Every rank draws the samples of its own B pairs, gathers all ranks' draws (with gradients) as candidates
    and scores its own 2B anchors; as in :func:`nt_xent_global` the sum over ranks of the returned values is
    W times the global loss, so DDP's gradient average is the gradient of one process on the concatenated
    batch with the same draws (tested with gloo). With one process it is ``mc_infonce``.
    """

    info = dist_info()
    if info.world == 1 or log_weight is not None:
        return mc_infonce(mu_a, kappa_a, mu_b, kappa_b, temperature, samples, kl_weight, posterior, log_weight)
    _check_mc_args(mu_a, kappa_a, mu_b, kappa_b, temperature, samples, kl_weight)
    b = mu_a.shape[0]
    q = _posterior(mu_a, kappa_a, mu_b, kappa_b, posterior)
    z = q.rsample(torch.Size([samples]))  # (M, 2B, D): this rank's draws, views a then b
    za = gather_with_grad(z[:, :b].transpose(0, 1)).transpose(0, 1)  # (M, WB, D) in rank order
    zb = gather_with_grad(z[:, b:].transpose(0, 1)).transpose(0, 1)
    n = za.shape[1]
    rows = local_rows(info, b)
    anchors = torch.cat([torch.arange(n)[rows], n + torch.arange(n)[rows]]).to(z.device)  # (2B,)
    log_lik = _mc_log_likelihood(torch.cat([za, zb], dim=1), anchors, temperature)  # (2B,)
    loss = -log_lik.sum()
    if kl_weight > 0:
        loss = loss + kl_weight * q.kl_to_uniform().sum()
    return loss / (2 * n) * info.world


def shrinkage(kappa: Tensor, dim: int) -> Tensor:
    """The mean resultant length of PowerSpherical(mu, kappa) on S^{dim-1}: E[z] = rho mu with
    rho = kappa / (kappa + dim - 1) (De Cao & Aziz 2020, the mean of the Beta marginal). kappa: (N,) -> (N,)."""
    return kappa / (kappa + dim - 1)


def shrinkage_nt_xent_global(
    mu_a: Tensor, kappa_a: Tensor, mu_b: Tensor, kappa_b: Tensor, temperature: float = 0.5, kl_weight: float = 0.0,
    log_weight: Tensor | None = None,
) -> Tensor:
    """The deterministic baseline of ``mc_infonce``: kappa used only as a learned per-view temperature.

    NT-Xent on the posterior means E[z] = rho mu, so the logit of views i, k is rho_i rho_k mu_i . mu_k / tau
    with rho = kappa / (kappa + D - 1); no sampling. Plus the same KL(q || uniform) regulariser as
    ``mc_infonce`` (a function of kappa alone). With kappa -> infinity it is NT-Xent on mu. Over the global
    batch with several processes, scaled for DDP as :func:`nt_xent_global`. mu_*: (N, D) unit; kappa_*: (N,).
    """
    _check_mc_args(mu_a, kappa_a, mu_b, kappa_b, temperature, 1, kl_weight)
    dim = mu_a.shape[1]
    m_a = F.normalize(mu_a.float(), dim=1) * shrinkage(kappa_a.float(), dim).unsqueeze(1)  # (N, D)
    m_b = F.normalize(mu_b.float(), dim=1) * shrinkage(kappa_b.float(), dim).unsqueeze(1)
    loss = nt_xent_global(m_a, m_b, temperature, normalize=False, log_weight=log_weight)
    if kl_weight == 0:
        return loss
    kl = _posterior(mu_a, kappa_a, mu_b, kappa_b).kl_to_uniform().mean()  # this rank's views
    return loss + kl_weight * kl
