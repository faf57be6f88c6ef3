"""Which images each training step sees: the epoch's shuffle lives on the training device, is cut into
global batches (the last partial batch dropped), and each process takes its contiguous share of every
global batch, so the global batch is the same whatever the number of processes."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class BatchSampler(NamedTuple):
    """Global batches of a device-resident permutation, and this rank's share of each."""

    batch_size: int  # the global batch
    rank: int
    world: int

    def shuffle(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        """A fresh order of the ``n`` images, drawn on the device from the run's generator: (n,) int64."""
        return torch.randperm(n, generator=gen, device=device)

    def indices(self, perm: Tensor, step: int) -> Tensor:
        """This rank's rows of global batch ``step`` of the epoch: (batch_size / world,) int64."""
        b, per = self.batch_size, self.batch_size // self.world
        return perm[step * b : (step + 1) * b][self.rank * per : (self.rank + 1) * per]
