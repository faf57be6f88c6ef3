"""The batch sampler: the ranks' shares of a global batch are its rows in order, whatever the world size."""

import torch

from probclr.data.sampler import BatchSampler


def test_ranks_partition_each_global_batch_in_order():
    perm = BatchSampler(8, 0, 1).shuffle(50, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert sorted(perm.tolist()) == list(range(50))
    for step in range(50 // 8):
        whole = BatchSampler(8, 0, 1).indices(perm, step)
        parts = [BatchSampler(8, r, w).indices(perm, step) for w in (2, 4) for r in range(w)]
        assert torch.equal(whole, perm[step * 8:(step + 1) * 8])
        assert torch.equal(torch.cat(parts[:2]), whole) and torch.equal(torch.cat(parts[2:]), whole)
