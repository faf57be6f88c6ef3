"""The compressed store (data.residency=encoded): an image folder packed as its files' bytes and decoded per
batch gives the memory-mapped path's splits and, on the CPU, the same run bit for bit; bad files are refused
when packing, nothing half-written; a damaged entry is rebuilt."""

import numpy as np
import pytest
import torch
from PIL import Image

from probclr.config import DataConfig, load_config
from probclr.data import encoded, folders
from probclr.data.encoded import EncodedImages, EncodedSplits, _fit
from probclr.data.residency import EncodedSource, make_source
from probclr.data.sources import load_splits
from probclr.errors import DataError
from probclr.eval.embeddings import content_digest
from probclr.train.pretrain import pretrain


def _write_jpegs(folder, n, size=(8, 8), start=0, quality=90):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(start)
    for i in range(n):
        arr = rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{start + i:03d}.jpg", quality=quality)


def _split_folder(root, sizes=((7, 5), (6, 4), (5, 3)), size=(8, 8)):
    for k, (n_train, n_test) in enumerate(sizes):
        _write_jpegs(root / "train" / f"c{k}", n_train, size=size, start=100 * k)
        _write_jpegs(root / "test" / f"c{k}", n_test, size=size, start=100 * k + 50)


def _cfg(tmp_path, root, residency, **kw):
    return DataConfig(dataset="imagefolder", data_dir=str(root), cache_dir=str(tmp_path / f"cache-{residency}"),
                      residency=residency, **kw)


def _decoded(images):
    return images[:] if isinstance(images, EncodedImages) else images


def _assert_same(a, b):
    assert torch.equal(_decoded(a.images), _decoded(b.images)) and torch.equal(a.labels, b.labels)
    assert a.classes == b.classes and tuple(a.images.shape) == tuple(b.images.shape)


@pytest.mark.parametrize("kw", [{}, {"val_size": 4, "val_seed": 3}, {"train_limit": 11, "test_limit": 5},
                                {"val_size": 0}, {"image_size": 6}])
def test_encoded_splits_equal_the_mapped_ones(tmp_path, kw):
    _split_folder(tmp_path / "imgs", size=(10, 8) if "image_size" in kw else (8, 8))
    mm = load_splits(_cfg(tmp_path, tmp_path / "imgs", "stream", **kw))
    enc = load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded", **kw))
    assert isinstance(enc.pretrain.images, EncodedImages) and isinstance(enc.test.images, EncodedImages)
    for name in ("pretrain", "train", "val", "test"):
        _assert_same(getattr(enc, name), getattr(mm, name))


@pytest.mark.parametrize("labeled", [True, False])
def test_one_folder_encoded_equals_decoded(tmp_path, labeled):
    root = tmp_path / "imgs"
    if labeled:
        _write_jpegs(root / "a", 9)
        folders_b = root / "b"
        _write_jpegs(folders_b, 8, start=40)
    else:
        _write_jpegs(root, 13)
    mem = load_splits(_cfg(tmp_path, root, "device", val_size=0))
    enc = load_splits(_cfg(tmp_path, root, "encoded", val_size=0))
    for name in ("pretrain", "train", "test"):
        _assert_same(getattr(enc, name), getattr(mem, name))


def test_indexing_decodes_any_rows_in_their_order(tmp_path):
    _split_folder(tmp_path / "imgs")
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded", val_size=0))
    x, ref = s.pretrain.images, load_splits(_cfg(tmp_path, tmp_path / "imgs", "device", val_size=0)).pretrain.images
    idx = torch.tensor([5, 0, 17, 3, 5])  # unsorted, with a repeat
    source = make_source(x, "encoded", torch.device("cpu"), tmp_path / "elsewhere")
    assert isinstance(source, EncodedSource) and not (tmp_path / "elsewhere").exists()
    assert torch.equal(source.batch(idx), ref[idx]) and torch.equal(x[idx.numpy()], ref[idx])
    assert torch.equal(x[4], ref[4]) and torch.equal(x[torch.tensor(4)], ref[4]) and torch.equal(x[-1], ref[-1])
    assert torch.equal(x[2:9], ref[2:9]) and torch.equal(x[::4], ref[::4]) and x[:0].shape == (0, 3, 8, 8)
    assert [c.shape[0] for c in x.split(5)] == [5, 5, 5, 3] and torch.equal(torch.cat(list(x.split(5))), ref)
    view = x.part(3, 9)
    assert view.shape == (6, 3, 8, 8) and torch.equal(view[[0, 5]], ref[[3, 8]])


def test_only_jpegs_checked_to_decode_identically_take_the_fast_decoder(tmp_path, monkeypatch):
    from tests.data.test_data import write_images

    root = tmp_path / "imgs"
    _write_jpegs(root / "a", 6)
    write_images(root / "b", 5, size=(8, 8), start=40)  # PNGs: the folder decoder
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8)).save(root / "b" / "grey.jpg")  # a greyscale JPEG
    ref = load_splits(_cfg(tmp_path, root, "device", val_size=0)).pretrain.images
    s = load_splits(_cfg(tmp_path, root, "encoded", val_size=0))
    fast = s.pretrain.images.pack.fast
    assert fast[:6].all() and not fast[6:11].any(), fast
    assert torch.equal(s.pretrain.images[:], ref)
    # a JPEG decoder that disagreed by one level on every pixel is never used for those files
    real = encoded._decode_jpegs
    monkeypatch.setattr(encoded, "_decode_jpegs", lambda d, dev: [x ^ 1 for x in real(d, dev)])
    again = load_splits(_cfg(tmp_path, root, "encoded", val_size=0, val_seed=5))  # another entry, packed anew
    assert not again.pretrain.images.pack.fast.any() and torch.equal(again.pretrain.images[:], ref)
    resized = load_splits(_cfg(tmp_path, root, "encoded", val_size=0, image_size=6)).pretrain.images
    assert not resized.pack.fast.any()  # resized images: the decoder alone does not give the final pixels


def test_a_run_from_the_encoded_store_equals_the_mapped_and_in_memory_runs_bit_for_bit(tmp_path):
    """On the CPU every batch decodes to the same pixels: encoded equals stream with a validation split (both
    pretrain on the pool, then the validation images), and equals device without one."""
    _split_folder(tmp_path / "imgs", sizes=((30, 2), (30, 2)))
    base = ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'imgs'}", "model.convnet_widths=[8, 16]",
            "optim.batch_size=16", "optim.epochs=1", "optim.warmup_epochs=0", "model.proj_dim=8"]
    pairs = {"val": ("stream", "data.val_size=8"), "noval": ("device", "data.val_size=0")}
    for name, (other, val) in pairs.items():
        for mode in (other, "encoded"):
            pretrain(load_config(None, [*base, val, f"data.residency={mode}", f"data.cache_dir={tmp_path / mode}"]),
                     tmp_path / f"run-{name}-{mode}")
        ref = torch.load(tmp_path / f"run-{name}-{other}" / "checkpoints" / "last.pt", weights_only=True)
        got = torch.load(tmp_path / f"run-{name}-encoded" / "checkpoints" / "last.pt", weights_only=True)
        assert got["metrics"][-1]["loss"] == ref["metrics"][-1]["loss"], name
        for k, v in ref["model"].items():
            assert torch.equal(got["model"][k], v), (name, k)


def test_the_entry_is_reused_and_a_damaged_pack_is_rebuilt(tmp_path, monkeypatch):
    _split_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, tmp_path / "imgs", "encoded")
    first = load_splits(cfg)
    pixels = first.pretrain.images[:]  # (N, 3, 8, 8)
    entry = EncodedSplits(cfg, "imagefolder-split", tmp_path / "imgs")
    assert (entry.dir / "train.bin").stat().st_size == sum(
        p.stat().st_size for p in (tmp_path / "imgs" / "train").rglob("*.jpg"))  # the files' bytes, no more
    real = encoded.pack_files
    monkeypatch.setattr(encoded, "pack_files", lambda *a: pytest.fail("a cached entry was packed again"))
    _assert_same(load_splits(cfg).pretrain, first.pretrain)
    monkeypatch.setattr(encoded, "pack_files", real)
    with open(entry.dir / "train.bin", "r+b") as fh:
        fh.truncate(100)  # a damaged pack: no longer matches its offsets
    with pytest.raises(DataError, match="ends early"):
        first.pretrain.images[:]  # an open view reads the damaged file: an error, not wrong pixels
    assert torch.equal(load_splits(cfg).pretrain.images[:], pixels)  # rebuilt from the folder


def test_scrambled_bytes_of_the_same_length_fail_their_checksum_in_one_line(tmp_path):
    _split_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, tmp_path / "imgs", "encoded")
    first = load_splits(cfg)
    pixels = first.pretrain.images[:]
    entry = EncodedSplits(cfg, "imagefolder-split", tmp_path / "imgs")
    data = bytearray((entry.dir / "train.bin").read_bytes())
    data[200:260] = bytes(reversed(data[200:260]))  # same length, offsets still match: only the bytes are wrong
    (entry.dir / "train.bin").write_bytes(bytes(data))
    with pytest.raises(DataError, match="fail their checksum.*delete"):
        first.pretrain.images[:]  # decoding would raise torchvision's error or give wrong pixels
    reopened = load_splits(cfg)  # opened again: the index matches, the checksums are checked at every read
    with pytest.raises(DataError, match="fail their checksum"):
        reopened.pretrain.images[:]
    import shutil

    shutil.rmtree(entry.dir)
    assert torch.equal(load_splits(cfg).pretrain.images[:], pixels)  # deleted as the message says: rebuilt


def test_a_damaged_file_is_refused_when_packing_and_nothing_is_left(tmp_path):
    _split_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "train" / "c1" / "999.jpg"
    bad.write_bytes((tmp_path / "imgs" / "train" / "c1" / "100.jpg").read_bytes()[:60])  # a truncated JPEG
    with pytest.raises(DataError, match=r"cannot read image .*999\.jpg"):
        load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded"))
    left = [p for p in (tmp_path / "cache-encoded").rglob("*") if p.is_file()]
    assert not left, left  # no pack, no offsets, no temporary file, no meta.pt


def test_another_size_is_refused_naming_both_files(tmp_path):
    _split_folder(tmp_path / "imgs")
    _write_jpegs(tmp_path / "imgs" / "train" / "c0", 1, size=(9, 8), start=999)
    with pytest.raises(DataError, match=r"999\.jpg' is 9x8 but .* is 8x8; set data.image_size"):
        load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded"))


def test_the_digest_names_the_pack_and_its_rows(tmp_path):
    _split_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, tmp_path / "imgs", "encoded")
    a, b = load_splits(cfg), load_splits(cfg)
    assert content_digest(a.train) == content_digest(b.train)  # the same rows of the same entry
    assert content_digest(a.train) != content_digest(a.val) and content_digest(a.train) != content_digest(a.pretrain)
    other = load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded", val_seed=1))
    assert content_digest(other.train) != content_digest(a.train)


def test_sources_without_image_files_refuse_encoded_in_one_line(tmp_path):
    with pytest.raises(DataError, match="dataset digits has none: use auto, device, host or stream"):
        load_splits(DataConfig(residency="encoded"))
    from typer.testing import CliRunner  # imported here: the CUDA test of this file needs no CLI packages

    from cli.main import app

    r = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "run"), "--set", "data.residency=encoded"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "data.residency encoded" in lines[0], r.output
    assert not (tmp_path / "run").exists()
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match="has no train/ and test/ image folders"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "cifar"), residency="encoded"))


def test_the_gpu_resize_matches_the_cpu_decoder_within_a_level(tmp_path):
    """_fit (the resize used after nvJPEG) against PIL's, on the CPU: the same geometry, antialiased bilinear."""
    rng = np.random.RandomState(0)
    for w, h in ((40, 30), (30, 44), (24, 24)):
        arr = (np.add.outer(np.arange(h), np.arange(w))[..., None] * [3, 5, 7] + rng.randint(0, 9, (h, w, 3)))
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray((arr % 256).astype(np.uint8)).save(path)
        ref = torch.from_numpy(np.array(folders.decode_one(path, 16))).permute(2, 0, 1)  # (3, 16, 16)
        got = _fit(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).contiguous(), 16)
        assert got.shape == ref.shape == (3, 16, 16)
        assert (got.int() - ref.int()).abs().float().mean() < 1.5, (w, h)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_decode_by_nvjpeg_close_to_the_cpu_decoder(tmp_path):
    _split_folder(tmp_path / "imgs", size=(40, 30))
    s = load_splits(_cfg(tmp_path, tmp_path / "imgs", "encoded", image_size=16, val_size=0))
    idx = torch.tensor([3, 0, 7, 7, 11])
    got = EncodedSource(s.pretrain.images, torch.device("cuda")).batch(idx)
    ref = s.pretrain.images[idx]
    assert got.device.type == "cuda" and got.shape == ref.shape
    assert (got.cpu().int() - ref.int()).abs().float().mean() < 3.0
