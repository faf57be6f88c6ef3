"""CUDA-only checks (skipped without a GPU; run them first whenever one is lent): the batched augmentation on
CUDA equals the CPU's for the same random parameters, bf16 autocast losses stay near fp32, SyncBatchNorm and a
single-process NCCL group work, and the compiled training step equals the eager one."""

import os

import pytest
import torch
import torch.nn.functional as F

from probclr.data.augment import affine_color, crop_resize_flip, gaussian_blur, sample_crops, sample_jitter
from probclr.model.losses import mc_infonce_from_samples, nt_xent

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_augmentation_on_cuda_equals_cpu_for_the_same_parameters():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8).float() / 255
    crops = sample_crops(64, 32, 32, (0.08, 1.0), (0.75, 4 / 3), g, torch.device("cpu"))
    flip = torch.rand(64, generator=g) < 0.5
    jit = sample_jitter(64, 0.5, g, torch.device("cpu"))
    on, gray = torch.rand(64, generator=g) < 0.8, torch.rand(64, generator=g) < 0.2
    sigma = 0.1 + 1.9 * torch.rand(64, generator=g)

    def views(dev):
        c = type(crops)(*(t.to(dev) for t in crops))
        j = type(jit)(*(t.to(dev) for t in jit))
        y = crop_resize_flip(x.to(dev), c, flip.to(dev), 32)
        y = affine_color(y, j, on.to(dev), gray.to(dev))
        return gaussian_blur(y, sigma.to(dev), 3).cpu()

    torch.testing.assert_close(views(torch.device("cuda")), views(torch.device("cpu")), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_losses_near_fp32():
    g = torch.Generator(device="cuda").manual_seed(0)
    z = F.normalize(torch.randn(512, 128, device="cuda", generator=g), dim=1)
    w = torch.randn(128, 128, device="cuda", generator=g) / 128**0.5
    ref = nt_xent(z @ w, z.roll(1, 0) @ w, 0.5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = z @ w, z.roll(1, 0) @ w  # bf16 projections, the loss in float32 as in training
    assert abs(float(nt_xent(a.float(), b.float(), 0.5)) - float(ref)) < 1e-2 * float(ref)
    za, zb = F.normalize(z @ w, dim=1)[None].repeat(4, 1, 1), F.normalize(z.roll(1, 0) @ w, dim=1)[None].repeat(4, 1, 1)
    ref = mc_infonce_from_samples(za, zb, 0.5)
    got = mc_infonce_from_samples(za.bfloat16().float(), zb.bfloat16().float(), 0.5)
    assert abs(float(got) - float(ref)) < 1e-2 * float(ref)


def test_syncbatchnorm_and_single_process_nccl_group():
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(8))).cuda()
        x = torch.randn(16, 8, 4, 4, device="cuda")
        ref = torch.nn.BatchNorm2d(8).cuda()
        torch.testing.assert_close(bn(x), ref(x), atol=1e-5, rtol=1e-5)  # one process: the plain batch statistics
        t = torch.ones(3, device="cuda")
        dist.all_reduce(t)
        assert torch.equal(t, torch.ones(3, device="cuda"))
    finally:
        dist.destroy_process_group()


def test_compiled_step_equals_eager():
    from probclr.config import load_config
    from probclr.model.build import build_model

    cfg = load_config(None, ["model.backbone=resnet18", "model.stem=cifar"])
    torch.manual_seed(0)
    eager = build_model(cfg, torch.zeros(3), torch.ones(3)).cuda()
    compiled_model = build_model(cfg, torch.zeros(3), torch.ones(3)).cuda()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    x = torch.rand(32, 3, 32, 32, device="cuda")
    h1, z1 = eager(x)
    h2, z2 = compiled(x)
    torch.testing.assert_close(z2, z1, atol=1e-3, rtol=1e-3)
    nt_xent(*z1.chunk(2), 0.5).backward()
    nt_xent(*z2.chunk(2), 0.5).backward()
    for (name, p1), p2 in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(p2.grad, p1.grad, atol=1e-3, rtol=1e-2, msg=name)


def test_stream_and_host_sources_on_cuda_give_the_cpu_batches(tmp_path):
    from probclr.data.residency import DeviceSource, HostSource, StreamSource, batches, memmap_file

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 16, 16), generator=g, dtype=torch.uint8)
    path = memmap_file(images, tmp_path)
    cuda = torch.device("cuda")
    for source in (DeviceSource(images, cuda), HostSource(images, cuda), StreamSource(path, cuda)):
        idx = torch.randperm(200, generator=g)[:64]
        batch = source.batch(idx)
        assert batch.device.type == "cuda" and torch.equal(batch.cpu(), images[idx])
        perm = torch.randperm(200, generator=g)
        ahead = list(batches(source, lambda i, p=perm: p[i * 32:(i + 1) * 32], range(6), ahead=True))
        assert all(x.device.type == "cuda" and torch.equal(x.cpu(), images[perm[i * 32:(i + 1) * 32]])
                   and torch.equal(rows, perm[i * 32:(i + 1) * 32])
                   for i, rows, x in ahead)  # fetched in the background thread: the same batches


def test_vmf_posterior_loss_runs_on_cuda_and_matches_cpu_in_the_deterministic_limit():
    from probclr.model.losses import mc_infonce

    g = torch.Generator().manual_seed(0)
    mu_a = F.normalize(torch.randn(16, 32, generator=g), dim=1)
    mu_b = F.normalize(mu_a + 0.3 * torch.randn(16, 32, generator=g), dim=1)
    k = torch.full((16,), 1e6)
    on_cuda = mc_infonce(mu_a.cuda(), k.cuda(), mu_b.cuda(), k.cuda(), 0.5, 8, 1e-3, "vmf").item()
    on_cpu = mc_infonce(mu_a, k, mu_b, k, 0.5, 8, 1e-3, "vmf").item()
    assert abs(on_cuda - on_cpu) < 1e-3
