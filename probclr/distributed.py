"""torch.distributed helpers: rank information and an all-gather that keeps gradients.

With DDP every rank embeds its own share of the global batch; contrastive losses need every embedding of
the global batch as negatives, so they gather them with :func:`gather_with_grad`, whose backward pass
returns to each rank the gradient of its own rows (a reduce-scatter of all ranks' gradients).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor


class DistInfo(NamedTuple):
    """This process's rank, the world size, and its local rank on the node."""
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process group's rank and size, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(0, 1, 0)


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), or stay single-process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return dist_info()


@contextlib.contextmanager
def owned_process_group() -> Iterator[None]:
    """Destroy on the way out a process group joined inside the block. Left alive, gloo's worker threads meet
    the interpreter's teardown and can abort a rank that finished its work ("terminate called without an
    active exception", SIGABRT: seen once in CI at the end of a 2-rank run)."""
    before = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not before and dist.is_available() and dist.is_initialized():
            gc.collect()  # drop the DDP wrapper's cycles first, so the group really goes while Python is whole
            dist.destroy_process_group()


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous. With gloo, all_gather's backward gives
    wrong gradients for a non-contiguous incoming gradient (as when the gathered tensor is used through a
    transpose; found by the --new-loss DDP test); made contiguous they are exact."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) of every rank in rank order -> (world * B, ...), differentiably."""
    info = dist_info()
    if info.world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat([_ContiguousGrad.apply(p) for p in parts], dim=0)


def local_rows(info: DistInfo, per_rank: int) -> slice:
    """This rank's rows of a gathered (world * per_rank, ...) tensor."""
    return slice(info.rank * per_rank, (info.rank + 1) * per_rank)


def barrier() -> None:
    """Wait for every rank (nothing with one process)."""
    if dist_info().world > 1:
        dist.barrier()


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of a scalar over ranks (for logging); ``x`` itself with one process."""
    if dist_info().world == 1:
        return x
    t = x.detach().clone()
    dist.all_reduce(t)
    return t / dist_info().world
