"""The methods the controlled study compares, each a probclr loss configuration trained through the same
head builder and loss dispatch as ``probclr pretrain`` (so the study tests the code users run), on a small MLP
encoder instead of a ConvNet."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from probclr.config import Config, merge
from probclr.errors import ConfigError
from probclr.model.build import build_head
from probclr.model.heads import HeadOutput, SimCLRModel


class Method(NamedTuple):
    """A loss configuration (``--set`` keys) and how its certainty and posterior are read."""
    name: str
    overrides: dict[str, object]
    family: str | None  # the predicted posterior's family for coverage; None = no posterior (a free norm)
    what: str


METHODS: tuple[Method, ...] = (
    Method("mc_infonce", {"loss.name": "mc_infonce"}, "power_spherical",
           "--new-loss: MC-InfoNCE, Power Spherical posterior, kappa branch"),
    Method("mc_infonce_vmf", {"loss.name": "mc_infonce", "loss.posterior": "vmf"}, "vmf",
           "--new-loss with loss.posterior=vmf"),
    Method("implicit", {"loss.name": "mc_infonce", "loss.kappa_head": "implicit"}, "power_spherical",
           "--new-loss with loss.kappa_head=implicit (kappa from the projection's norm)"),
    Method("mu_then_kappa", {"loss.name": "mc_infonce", "loss.phases": "mu_then_kappa", "loss.kappa_max": 1000.0,
                             "loss.samples": 128}, "power_spherical",
           "--new-loss in two phases: mu first with kappa held near its start (~32: kappa_max 1000), then kappa "
           "alone (mu detached); 128 draws"),
    Method("mu_then_joint", {"loss.name": "mc_infonce", "loss.phases": "mu_then_joint", "loss.kappa_max": 1000.0,
                             "loss.samples": 128}, "power_spherical",
           "the official code's schedule: mu first with kappa held near ~32, then everything; 128 draws"),
    Method("shrinkage", {"loss.name": "shrinkage"}, "power_spherical",
           "loss.name=shrinkage: kappa as a learned per-view temperature, no sampling"),
    Method("nt_xent_norm", {"loss.name": "nt_xent"}, None,
           "NT-Xent; certainty = the norm of the unnormalised projection"),
)


def method(name: str) -> Method:
    """The method called ``name``; a one-line error naming the valid ones otherwise."""
    for m in METHODS:
        if m.name == name:
            return m
    raise ConfigError(f"unknown method {name!r}; valid: {', '.join(m.name for m in METHODS)}")


def method_config(m: Method, dim_z: int, temperature: float, samples: int, width: int) -> Config:
    """The probclr config of method ``m`` on a dim_z-sphere: the temperature of the process, no KL term, the
    study's draws unless the method sets its own."""
    base = {"loss.temperature": temperature, "loss.samples": samples, "loss.kl_weight": 0.0, "model.proj_dim": dim_z,
            "model.proj_hidden": width}
    return merge(Config(), {**base, **m.overrides})  # a method's own settings (its draws) win


class MLPEncoder(nn.Module):
    """x (N, dim_x) -> features h (N, width): three Linear + LeakyReLU layers."""

    def __init__(self, dim_x: int, width: int) -> None:
        super().__init__()
        self.out_dim = width
        self.net = nn.Sequential(nn.Linear(dim_x, width), nn.LeakyReLU(), nn.Linear(width, width), nn.LeakyReLU(),
                                 nn.Linear(width, width), nn.LeakyReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (N, width)


def build(cfg: Config, dim_x: int, width: int) -> SimCLRModel:
    """The MLP encoder and the head ``cfg``'s loss needs."""
    encoder = MLPEncoder(dim_x, width)
    return SimCLRModel(encoder, build_head(cfg, width))


def certainty(out: HeadOutput) -> Tensor:
    """The method's certainty per input: kappa where the head has one, else the projection's norm. (N,)"""
    return out.kappa if out.kappa is not None else out.proj.float().norm(dim=1)
