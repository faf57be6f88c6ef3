"""data.residency: device, host and stream give the same batches, so the same run, bit for bit, on the CPU."""

import torch

from probclr.config import load_config
from probclr.data.residency import DeviceSource, HostSource, StreamSource, memmap_file, resolve
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
    assert resolve("auto", images.numel(), cpu) == "device" and resolve("stream", images.numel(), cpu) == "stream"
    assert resolve("auto", 10**18, cpu) == "stream"  # more than half of any machine's memory


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

    calls: list[int] = []

    def index(i):
        calls.append(i)
        return perm[i * 8:(i + 1) * 8]

    for steps in (range(8), range(3, 8), range(7, 8), range(0)):
        calls.clear()
        got = list(batches(source, index, steps, ahead=True))
        assert calls == list(steps)  # each step's rows drawn once, in order
        ref = list(batches(source, index, steps, ahead=False))
        assert [i for i, _, _ in got] == list(steps) == [i for i, _, _ in ref]
        assert all(torch.equal(ra, perm[i * 8:(i + 1) * 8]) and torch.equal(ra, rb) and torch.equal(a, b)
                   and torch.equal(a, images[ra]) for (i, ra, a), (_, rb, b) in zip(got, ref, strict=True))

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


def test_every_residency_trains_the_same_model_on_an_image_folder(tmp_path, cifar_slice):
    """A folder's cache entry stores the validation images last; pretraining must still see the in-memory
    order, so that a machine with less memory (where auto picks stream) trains the same model."""
    base = ["data.dataset=cifar10", f"data.data_dir={cifar_slice}", "model.convnet_widths=[8, 16]",
            "optim.batch_size=32", "optim.epochs=2", "optim.warmup_epochs=0", "model.proj_dim=16",
            "run.monitor_every=1", "run.monitor_bank=200", "run.monitor_queries=40", "data.train_limit=200",
            f"data.cache_dir={tmp_path / 'cache'}"]
    modes = ("device", "host", "stream", "encoded")
    for mode in modes:
        pretrain(load_config(None, [*base, f"data.residency={mode}"]), tmp_path / mode)
    ref = torch.load(tmp_path / "device" / "checkpoints" / "last.pt", weights_only=True)
    for mode in modes[1:]:
        got = torch.load(tmp_path / mode / "checkpoints" / "last.pt", weights_only=True)
        for key in ("loss", "knn_val_acc"):
            assert [m[key] for m in got["metrics"]] == [m[key] for m in ref["metrics"]], (mode, key)
        for k, v in ref["model"].items():
            assert torch.equal(got["model"][k], v), (mode, k)
        assert torch.equal(got["generator"], ref["generator"])


def test_a_folder_entry_without_its_canonical_order_is_rebuilt(tmp_path, cifar_slice):
    from probclr.config import DataConfig
    from probclr.data.sources import load_splits

    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_slice), residency="stream", train_limit=100,
                     cache_dir=str(tmp_path / "cache"))
    first = load_splits(cfg)
    rows = first.pretrain_rows
    assert rows is not None and sorted(rows.tolist()) == list(range(100)) and rows.tolist() != list(range(100))
    (meta_path,) = (tmp_path / "cache").rglob("meta.pt")
    meta = torch.load(meta_path, weights_only=True)
    del meta["pretrain_rows"]  # an entry written before the order was recorded
    torch.save(meta, meta_path)
    again = load_splits(cfg)
    assert torch.equal(again.pretrain_rows, rows)
    # the canonical order is the in-memory path's: the same images, image for image
    memory = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice), residency="device",
                                    train_limit=100, cache_dir=str(tmp_path / "cache2")))
    assert memory.pretrain_rows is None
    assert torch.equal(again.pretrain.images[again.pretrain_rows], memory.pretrain.images)
