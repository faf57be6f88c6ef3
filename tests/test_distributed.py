"""DDP on CPU with gloo and 2 processes: global negatives give the loss and the gradients of one process on
the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from probclr.losses import nt_xent, nt_xent_global


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)  # 8 pairs


def _worker(rank, world, port, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = DDP(_model())
    xa, xb = _data()
    per = xa.shape[0] // world
    mine = slice(rank * per, (rank + 1) * per)
    loss = nt_xent_global(model(xa[mine]), model(xb[mine]), 0.2)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)  # sum over ranks = world * global loss
    torch.save({"loss": total / world, "grads": [p.grad for p in model.parameters()]}, f"{out_dir}/r{rank}.pt")
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model = _model()
    xa, xb = _data()
    ref = nt_xent(model(xa), model(xb), 0.2)
    ref.backward()
    for r in range(2):
        got = torch.load(tmp_path / f"r{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
        for g, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_single_process_global_loss_is_nt_xent():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(nt_xent_global(a, b, 0.3), nt_xent(a, b, 0.3))
