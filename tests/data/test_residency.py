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


def test_batches_fetched_ahead_are_the_batches_fetched_in_turn_and_errors_surface(tmp_path):
    import pytest

    from probclr.data.residency import batches
    from probclr.errors import DataError

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 4, 4), generator=g, dtype=torch.uint8)
    source = StreamSource(memmap_file(images, tmp_path), torch.device("cpu"))
    perm = torch.randperm(64, generator=g)

    def index(i):
        return perm[i * 8:(i + 1) * 8]

    for steps in (range(8), range(3, 8), range(7, 8), range(0)):
        got = list(batches(source, index, steps, ahead=True))
        ref = list(batches(source, index, steps, ahead=False))
        assert [i for i, _ in got] == list(steps) == [i for i, _ in ref]
        assert all(torch.equal(a, b) and torch.equal(a, images[index(i)]) for (i, a), (_, b) in zip(got, ref, strict=True))

    class Failing:
        shape = images.shape

        def batch(self, idx):
            if int(idx[0]) == int(perm[16]):  # the third batch, fetched in the background thread
                raise DataError("image 3 is damaged")
            return images[idx]

    feed = batches(Failing(), index, range(8), ahead=True)
    assert next(feed)[0] == 0 and next(feed)[0] == 1  # the error waits for its own step
    with pytest.raises(DataError, match="image 3 is damaged"):
        next(feed)
