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


def _torchrun(tmp_path, *args):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "cli.main", "pretrain", "--device", "cpu", "--set", "model.convnet_widths=[8, 16]",
           "--set", "model.proj_dim=16", "--set", "optim.warmup_epochs=0", "--set", "run.num_threads=1", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path.parent)


@pytest.mark.slow
def test_torchrun_two_processes_pretrain_and_checkpoint_loads_in_one(tmp_path):
    from probclr.features import load_model

    out = tmp_path / "ddp"
    res = _torchrun(tmp_path, "--epochs", "2", "--batch-size", "64", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # rank 0 alone writes the metrics
    model = load_model(out / "checkpoints" / "last.pt")  # a plain (not DDP-prefixed) state dict
    assert sum(p.numel() for p in model.parameters()) > 0
    bad = _torchrun(tmp_path, "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "not divisible by the world size 2" in bad.stderr
