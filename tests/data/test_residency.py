"""data.residency: device, host and stream give the same batches, so the same run, bit for bit, on the CPU."""

import torch

from probclr.config import load_config
from probclr.data.residency import DeviceSource, HostSource, StreamSource, choose, memmap_file
from probclr.train.pretrain import pretrain


def test_sources_give_identical_batches(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 8, 8), generator=g, dtype=torch.uint8)
    cpu = torch.device("cpu")
    path = memmap_file(images, tmp_path)
    assert memmap_file(images, tmp_path) == path  # keyed by contents: written once
    sources = [DeviceSource(images, cpu), HostSource(images, cpu), StreamSource(path, cpu)]
    for _ in range(5):
        idx = torch.randperm(100, generator=g)[:17]  # unsorted, as a shuffled batch is
        batches = [s.batch(idx) for s in sources]
        assert all(torch.equal(b, images[idx]) for b in batches)
    assert choose(images, "auto", cpu) == "device" and choose(images, "stream", cpu) == "stream"


def test_stream_run_equals_device_run_bit_for_bit(tmp_path):
    base = ["model.convnet_widths=[8, 16]", "optim.batch_size=64", "optim.epochs=2", "optim.warmup_epochs=0",
            "model.proj_dim=16", f"data.cache_dir={tmp_path / 'cache'}"]
    for mode in ("device", "stream", "host"):
        pretrain(load_config(None, [*base, f"data.residency={mode}"]), tmp_path / mode)
    ref = torch.load(tmp_path / "device" / "checkpoints" / "last.pt", weights_only=True)
    for mode in ("stream", "host"):
        got = torch.load(tmp_path / mode / "checkpoints" / "last.pt", weights_only=True)
        assert got["metrics"][-1]["loss"] == ref["metrics"][-1]["loss"]
        for k, v in ref["model"].items():
            assert torch.equal(got["model"][k], v), (mode, k)
