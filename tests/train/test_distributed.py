"""DDP on CPU with gloo and 2 processes: global negatives give the loss and the gradients of one process on
the concatenated batch."""

import json
import math
import os
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cli.launch import free_port
from probclr.model.losses import nt_xent, nt_xent_global


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)  # 8 pairs


def _join(rank, world, port, module):
    """Join a gloo group of ``world`` processes; ``module`` wrapped in DDP and this rank's share of the pairs."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    xa, xb = _data()
    per = xa.shape[0] // world
    mine = slice(rank * per, (rank + 1) * per)
    return DDP(module), xa[mine], xb[mine]


def _finish(rank, world, out_dir, loss, model, **extra):
    """Backward, then save the mean loss over ranks (= the global loss) and this rank's gradients."""
    import torch.distributed as dist

    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)  # sum over ranks = world * global loss
    torch.save({"loss": total / world, "grads": [p.grad for p in model.parameters()], **extra},
               f"{out_dir}/r{rank}.pt")
    dist.destroy_process_group()
    # The results are saved. Leave without interpreter finalization: the DDP wrapper still holds the gloo
    # group, whose worker threads can abort the process while Python tears down (SIGABRT, "terminate called
    # without an active exception": seen in CI; pytorch/pytorch#179291 describes the mechanism).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker(rank, world, port, out_dir):
    model, xa, xb = _join(rank, world, port, _model())
    _finish(rank, world, out_dir, nt_xent_global(model(xa), model(xb), 0.2), model)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    model = _model()
    xa, xb = _data()
    ref = nt_xent(model(xa), model(xb), 0.2)
    ref.backward()
    for r in range(2):
        got = torch.load(tmp_path / f"r{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
        for g, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


class _ProbHead(nn.Module):
    """A tiny model with a (mu, kappa) output, kappa in (1, ~50)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU())
        self.mu = nn.Linear(16, 8)
        self.kappa = nn.Linear(16, 1)

    def forward(self, x):
        h = self.body(x)
        return self.mu(h), 1 + 10 * nn.functional.softplus(self.kappa(h)).squeeze(1)


M, KL = 4, 0.01


def _mc_worker(rank, world, port, out_dir):
    from probclr.model.losses import mc_infonce_global

    model, xa, xb = _join(rank, world, port, _ProbHead())
    (mu_a, k_a), (mu_b, k_b) = model(xa), model(xb)
    torch.manual_seed(100 + rank)  # each rank's own Monte-Carlo draws
    _finish(rank, world, out_dir, mc_infonce_global(mu_a, k_a, mu_b, k_b, 0.2, M, KL), model)


@pytest.mark.slow
def test_new_loss_on_two_gloo_ranks_equals_one_process_with_the_same_draws(tmp_path):
    """--new-loss under DDP: the loss and gradients of one process on the concatenated batch, given the same
    Monte-Carlo draws (each rank's drawn from its own seed, replayed here in rank order)."""
    import torch.nn.functional as F

    from probclr.model.distributions import PowerSpherical
    from probclr.model.losses import mc_infonce_from_samples

    world = 2
    mp.spawn(_mc_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    model = _ProbHead()
    xa, xb = _data()
    per = xa.shape[0] // world
    za, zb, kls = [], [], []
    for r in range(world):
        mine = slice(r * per, (r + 1) * per)
        (mu_a, k_a), (mu_b, k_b) = model(xa[mine]), model(xb[mine])
        torch.manual_seed(100 + r)
        q = PowerSpherical(F.normalize(torch.cat([mu_a, mu_b]), dim=1), torch.cat([k_a, k_b]))
        z = q.rsample(torch.Size([M]))  # (M, 2 per, D), as the rank drew them
        za.append(z[:, :per])
        zb.append(z[:, per:])
        kls.append(q.kl_to_uniform())
    ref = mc_infonce_from_samples(torch.cat(za, 1), torch.cat(zb, 1), 0.2) + KL * torch.cat(kls).mean()
    ref.backward()
    for r in range(world):
        got = torch.load(tmp_path / f"r{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
        for g, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8))


def _syncbn_worker(rank, world, port, out_dir):
    from probclr.train.syncbn import convert_to_global_bn

    model, xa, xb = _join(rank, world, port, convert_to_global_bn(_bn_model()))
    za, zb = model(torch.cat([xa, xb])).chunk(2)  # one forward of both views, as training does
    bn = model.module[2]
    _finish(rank, world, out_dir, nt_xent_global(za, zb, 0.2), model, mean=bn.running_mean, var=bn.running_var)


@pytest.mark.slow
def test_sync_batchnorm_on_two_gloo_ranks_equals_batchnorm_on_the_global_batch(tmp_path):
    """run.sync_bn on CPU (probclr.syncbn; nn.SyncBatchNorm is CUDA-only): BN statistics over the global batch
    (the paper's global BN), so gradients and running statistics equal one process's BN on the concatenated
    batch."""
    world = 2
    mp.spawn(_syncbn_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    model = _bn_model()
    xa, xb = _data()
    per = xa.shape[0] // world
    # one process sees the global batch in the ranks' order: rank 0's views a, b, then rank 1's
    both = torch.cat([torch.cat([xa[r * per:(r + 1) * per], xb[r * per:(r + 1) * per]]) for r in range(world)])
    out = model(both)
    za = torch.cat([out[2 * r * per:(2 * r + 1) * per] for r in range(world)])
    zb = torch.cat([out[(2 * r + 1) * per:(2 * r + 2) * per] for r in range(world)])
    nt_xent(za, zb, 0.2).backward()
    for r in range(world):
        got = torch.load(tmp_path / f"r{r}.pt", weights_only=True)
        torch.testing.assert_close(got["mean"], model[2].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["var"], model[2].running_var, rtol=1e-5, atol=1e-6)
        for g, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_run_stopped_in_one_process_resumes_on_two(tmp_path):
    """Resume across world sizes: a single-process run stopped mid-epoch (SIGTERM) continues under torchrun
    with 2 processes (same global batch and shuffle, each rank its share); a world size that does not divide
    the batch is refused in one line."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["pretrain", "--device", "cpu", "--set", "model.convnet_widths=[8, 16]", "--set", "model.proj_dim=16",
            "--set", "optim.warmup_epochs=0", "--set", "run.num_threads=1", "--epochs", "3", "--batch-size", "64",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path.parent)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 143, err
    before = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    res = _torchrun(tmp_path, *args[9:-2], "--resume", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    after = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert after["epoch"] == 3 and len(after["metrics"]) == 3 and "partial" not in after
    assert after["metrics"][: before["epoch"]] == before["metrics"]  # the epochs done before are kept as they were


@pytest.mark.slow
def test_pretrain_nproc_launches_ranks_and_checks_the_world_first(tmp_path):
    """`probclr pretrain --nproc 2`: the world is checked once in the parent (one line, exit 2), then two
    ranks train with global negatives; under torchrun the per-rank error is the same one line."""
    from typer.testing import CliRunner

    from cli.main import app

    tiny = ["pretrain", "--device", "cpu", "--set", "model.convnet_widths=[8, 16]", "--set", "model.proj_dim=16",
            "--set", "optim.warmup_epochs=0", "--set", "run.num_threads=1", "--epochs", "1"]
    odd = "optim.batch_size 63 is not divisible by the world size 2"
    for extra, match in ((["--nproc", "2", "--batch-size", "63"], odd),
                         (["--nproc", "0"], "--nproc must be >= 1, got 0"),
                         (["--nproc", "2", "--device", "cuda"], "GPU")):
        res = CliRunner().invoke(app, [*tiny, *extra, "--out", str(tmp_path / "bad")])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and match in res.output, res.output
        assert not (tmp_path / "bad").exists()
    out = tmp_path / "two"
    res = CliRunner().invoke(app, [*tiny, "--new-loss", "--nproc", "2", "--batch-size", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "provenance.json").read_text())["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    bad = _torchrun(tmp_path, "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "odd"))
    assert bad.returncode != 0 and "error: optim.batch_size 63 is not divisible by the world size 2" in bad.stderr


def test_global_bn_in_one_process_is_batchnorm_and_keeps_state_dict_keys():
    from probclr.train.syncbn import GlobalBatchNorm, convert_to_global_bn

    ref = _bn_model()
    ref[2].running_mean.fill_(0.5)
    conv = convert_to_global_bn(_bn_model())
    conv.load_state_dict(ref.state_dict())
    assert isinstance(conv[2], GlobalBatchNorm) and list(conv.state_dict()) == list(ref.state_dict())
    x = torch.randn(10, 3, 2, 2)
    for train in (True, False):
        ref.train(train)
        conv.train(train)
        torch.testing.assert_close(conv(x), ref(x))
    torch.testing.assert_close(conv[2].running_var, ref[2].running_var)


def test_single_process_global_new_loss_is_mc_infonce():
    from probclr.model.losses import mc_infonce, mc_infonce_global

    mu_a, mu_b = torch.randn(6, 4), torch.randn(6, 4)
    k_a, k_b = torch.rand(6) * 50 + 1, torch.rand(6) * 50 + 1
    torch.manual_seed(3)
    got = mc_infonce_global(mu_a, k_a, mu_b, k_b, 0.3, 5, 0.01)
    torch.manual_seed(3)
    torch.testing.assert_close(got, mc_infonce(mu_a, k_a, mu_b, k_b, 0.3, 5, 0.01))


def test_mc_infonce_from_samples_matches_mc_infonce_draws():
    import torch.nn.functional as F

    from probclr.model.distributions import PowerSpherical
    from probclr.model.losses import mc_infonce, mc_infonce_from_samples

    mu_a, mu_b = torch.randn(5, 3), torch.randn(5, 3)
    k_a, k_b = torch.rand(5) * 20 + 1, torch.rand(5) * 20 + 1
    torch.manual_seed(4)
    z = PowerSpherical(F.normalize(torch.cat([mu_a, mu_b]), dim=1), torch.cat([k_a, k_b])).rsample(torch.Size([3]))
    torch.manual_seed(4)
    torch.testing.assert_close(mc_infonce_from_samples(z[:, :5], z[:, 5:], 0.4), mc_infonce(mu_a, k_a, mu_b, k_b, 0.4, 3))


def test_single_process_global_loss_is_nt_xent():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(nt_xent_global(a, b, 0.3), nt_xent(a, b, 0.3))


def _torchrun(tmp_path, *args):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "cli.main", "pretrain", "--device", "cpu", "--set", "model.convnet_widths=[8, 16]",
           "--set", "model.proj_dim=16", "--set", "optim.warmup_epochs=0", "--set", "run.num_threads=1", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path.parent)


@pytest.mark.slow
def test_torchrun_two_processes_pretrain_and_checkpoint_loads_in_one(tmp_path):
    from probclr.eval.frozen_model import load_model

    out = tmp_path / "ddp"
    res = _torchrun(tmp_path, "--epochs", "2", "--batch-size", "64", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # rank 0 alone writes the metrics
    model = load_model(out / "checkpoints" / "last.pt")  # a plain (not DDP-prefixed) state dict
    assert sum(p.numel() for p in model.parameters()) > 0
    prob = tmp_path / "ddp-new-loss"  # --new-loss with global BN on 2 CPU processes
    res = _torchrun(tmp_path, "--new-loss", "--set", "run.sync_bn=true", "--epochs", "1", "--batch-size", "64",
                    "--out", str(prob))
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads((prob / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["loss"]) and row["kappa_q10"] <= row["kappa_q50"] <= row["kappa_q90"]
    assert load_model(prob / "checkpoints" / "last.pt").head is not None  # loads into the plain model
    bad = _torchrun(tmp_path, "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "not divisible by the world size 2" in bad.stderr
