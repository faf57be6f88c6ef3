"""Image folders decoded straight into memory maps (data.residency=stream): the same splits as decoding into
memory, chunk by chunk, cached by everything they depend on, nothing half-written on an error."""

import numpy as np
import pytest
import torch

from probclr.config import DataConfig, load_config
from probclr.data import mapped
from probclr.data.residency import StreamSource, make_source
from probclr.data.sources import load_splits
from probclr.errors import DataError
from probclr.train.pretrain import pretrain
from tests.data.test_data import write_images


def _split_folder(root, sizes=((7, 5), (6, 4), (5, 3))):
    for k, (n_train, n_test) in enumerate(sizes):
        write_images(root / "train" / f"c{k}", n_train, size=(8, 8), start=100 * k)
        write_images(root / "test" / f"c{k}", n_test, size=(8, 8), start=100 * k + 50)


def _cfg(tmp_path, root, residency, **kw):
    return DataConfig(dataset="imagefolder", data_dir=str(root), cache_dir=str(tmp_path / f"cache-{residency}"),
                      residency=residency, **kw)


def _assert_same(a, b):
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes


@pytest.mark.parametrize("kw", [{}, {"val_size": 4, "val_seed": 3}, {"train_limit": 11, "test_limit": 5}, {"val_size": 0}])
def test_mapped_splits_equal_the_decoded_ones(tmp_path, kw):
    _split_folder(tmp_path / "imgs")
    mem = load_splits(_cfg(tmp_path, tmp_path / "imgs", "device", **kw))
    mm = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream", **kw))
    assert mapped.mapped_file(mm.pretrain.images) is not None and mapped.mapped_file(mem.pretrain.images) is None
    for name in ("train", "val", "test"):
        _assert_same(getattr(mm, name), getattr(mem, name))
    # pretraining: the same images, the label pool first, then the validation split
    _assert_same(mm.pretrain, mem.pretrain._replace(images=torch.cat([mem.train.images, mem.val.images]),
                                                    labels=torch.cat([mem.train.labels, mem.val.labels])))
    assert mm.pretrain.images.shape[0] == mm.train.images.shape[0] + mm.val.images.shape[0]


@pytest.mark.parametrize("labeled", [True, False])
def test_one_folder_mapped_equals_decoded(tmp_path, labeled):
    root = tmp_path / "imgs"
    if labeled:
        write_images(root / "a", 9, size=(8, 8))
        write_images(root / "b", 8, size=(8, 8), start=40)
    else:
        write_images(root, 13, size=(8, 8))
    for kw in ({}, {"train_limit": 7}):
        mem = load_splits(_cfg(tmp_path, root, "device", **kw))
        mm = load_splits(_cfg(tmp_path, root, "stream", **kw))
        for name in ("train", "val", "test"):
            _assert_same(getattr(mm, name), getattr(mem, name))
        if not labeled:
            _assert_same(mm.pretrain, mem.pretrain)


def test_decoding_goes_chunk_by_chunk_and_the_entry_is_reused(tmp_path, monkeypatch):
    _split_folder(tmp_path / "imgs")
    monkeypatch.setattr(mapped, "CHUNK", 4)
    stacked = []
    real_stack = np.stack

    def stack(arrays, *a, **k):
        stacked.append(len(arrays))
        return real_stack(arrays, *a, **k)

    monkeypatch.setattr(mapped.np, "stack", stack)
    cfg = _cfg(tmp_path, tmp_path / "imgs", "stream")
    first = load_splits(cfg)
    assert max(stacked) == 4 and sum(stacked) == 18 + 12  # train then test, 4 images at a time
    from probclr.data import folders

    monkeypatch.setattr(folders, "decode_one", lambda *a: pytest.fail("a cached entry was decoded again"))
    again = load_splits(cfg)
    _assert_same(again.pretrain, first.pretrain)


def test_the_key_covers_the_split_and_a_damaged_entry_is_rebuilt(tmp_path):
    _split_folder(tmp_path / "imgs")
    a = mapped.MappedSplits(_cfg(tmp_path, tmp_path / "imgs", "stream"), "imagefolder-split", tmp_path / "imgs")
    for change in ({"val_seed": 1}, {"val_size": 3}, {"train_limit": 10}, {"image_size": 6}):
        b = mapped.MappedSplits(_cfg(tmp_path, tmp_path / "imgs", "stream", **change), "imagefolder-split",
                                tmp_path / "imgs")
        assert b.dir != a.dir, change
    s = a.load(split=True)
    (a.dir / "meta.pt").write_bytes(b"not a checkpoint")
    _assert_same(a.load(split=True).train, s.train)  # rebuilt from the folder


def test_a_bad_image_leaves_no_entry_and_one_line_names_it(tmp_path):
    _split_folder(tmp_path / "imgs")
    write_images(tmp_path / "imgs" / "train" / "c0", 1, size=(9, 8), start=999)  # 999.png: another size
    cfg = _cfg(tmp_path, tmp_path / "imgs", "stream")
    with pytest.raises(DataError, match=r"999\.png' is 9x8 but .* is 8x8; set data.image_size"):
        load_splits(cfg)
    left = list((tmp_path / "cache-stream").rglob("*"))
    assert not [p for p in left if p.is_file()], left  # no .npy, no temporary file, no meta.pt


def test_auto_maps_a_folder_only_when_it_would_not_fit(tmp_path, monkeypatch):
    _split_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, tmp_path / "imgs", "auto")
    assert mapped.mapped_file(load_splits(cfg).pretrain.images) is None
    monkeypatch.setattr(mapped.os, "sysconf", lambda name: 1)  # one byte of memory available
    assert mapped.mapped_file(load_splits(cfg).pretrain.images) is not None


def test_stream_source_reads_the_mapped_file_itself(tmp_path):
    _split_folder(tmp_path / "imgs")
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream"))
    source = make_source(s.pretrain.images, "stream", torch.device("cpu"), tmp_path / "elsewhere")
    assert isinstance(source, StreamSource)
    assert not (tmp_path / "elsewhere").exists()  # no second copy written
    idx = torch.tensor([5, 0, 17, 3])
    assert torch.equal(source.batch(idx), s.pretrain.images[idx])


def test_a_mapped_folder_run_equals_the_in_memory_run_bit_for_bit(tmp_path):
    """Without a validation split the mapped pretraining order is the folder order, so the same seed gives the
    same batches: stream (memory maps from the start) equals device (decoded into memory)."""
    _split_folder(tmp_path / "imgs", sizes=((30, 2), (30, 2)))
    base = ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'imgs'}", "data.val_size=0",
            "model.convnet_widths=[8, 16]", "optim.batch_size=16", "optim.epochs=1", "optim.warmup_epochs=0",
            "model.proj_dim=8"]
    for mode in ("device", "stream"):
        pretrain(load_config(None, [*base, f"data.residency={mode}", f"data.cache_dir={tmp_path / mode}"]),
                 tmp_path / f"run-{mode}")
    ref = torch.load(tmp_path / "run-device" / "checkpoints" / "last.pt", weights_only=True)
    got = torch.load(tmp_path / "run-stream" / "checkpoints" / "last.pt", weights_only=True)
    assert got["metrics"][-1]["loss"] == ref["metrics"][-1]["loss"]
    for k, v in ref["model"].items():
        assert torch.equal(got["model"][k], v), k


def test_chunks_read_from_the_file_give_the_same_channel_statistics(tmp_path, monkeypatch):
    from probclr.model.backbones import channel_stats

    _split_folder(tmp_path / "imgs")
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream"))
    images = s.pretrain.images
    read = list(mapped.chunks(images, 4))
    assert [c.shape[0] for c in read] == [4, 4, 4, 4, 2] and torch.equal(torch.cat(read), images)
    in_memory = images.clone()  # not mapped: split as usual
    assert mapped.mapped_file(in_memory) is None and torch.equal(torch.cat(list(mapped.chunks(in_memory, 5))), images)
    ref = channel_stats(in_memory)
    headers = []
    real_header = mapped.npy_header
    monkeypatch.setattr(mapped, "npy_header", lambda path: headers.append(path) or real_header(path))
    got = channel_stats(images)  # read from the file: the same chunks, the same sums
    assert headers == [mapped.mapped_file(images)]  # it did read the file, not the map
    assert all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))


def test_only_the_mapped_tensor_itself_names_its_file(tmp_path):
    import gc

    _split_folder(tmp_path / "imgs")
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream"))
    full = s.pretrain.images
    assert mapped.mapped_file(full) is not None
    assert mapped.mapped_file(full[:5]) is None and mapped.mapped_file(full.clone()) is None  # views, copies
    key = id(full)
    del s, full
    gc.collect()
    assert key not in mapped._FILES  # forgotten with the tensor: a new tensor at that address is not "mapped"


def test_a_truncated_map_is_an_error_not_a_hang(tmp_path):
    _split_folder(tmp_path / "imgs")
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream"))
    path = mapped.mapped_file(s.pretrain.images)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)  # the last image loses 100 bytes after the map was opened
    with pytest.raises(DataError, match="ends early"):
        list(mapped.chunks(s.pretrain.images, 4))


def test_a_zeroed_mapped_file_is_rebuilt_never_trained_on(tmp_path):
    """Zero the pixels of a memory-mapped entry after it was written (the header stays valid): the next load
    sees the file changed since the entry recorded it and decodes the folder again."""
    _split_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, tmp_path / "imgs", "stream")
    first = load_splits(cfg)
    truth = first.pretrain.images.clone()
    entry = mapped.MappedSplits(cfg, "imagefolder-split", tmp_path / "imgs")
    path = entry.dir / "train.npy"
    _, offset = mapped.npy_header(path)
    del first
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(path.stat().st_size - offset))
    assert torch.equal(load_splits(cfg).pretrain.images, truth)


def test_a_zeroed_stream_file_is_rewritten(tmp_path):
    from probclr.data.residency import memmap_file

    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    path = memmap_file(images, tmp_path)
    _, offset = mapped.npy_header(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(images.numel()))
    assert memmap_file(images, tmp_path) == path
    assert torch.equal(torch.from_numpy(np.load(path)), images)
