import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from probclr.config import DataConfig
from probclr.data.sources import load_splits
from probclr.errors import DataError


def write_images(folder, n, size=(12, 10), mode="RGB", start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(start)
    for i in range(n):
        arr = rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(folder / f"{start + i:03d}.png")


@pytest.mark.parametrize("through_sklearn", [False, True])
def test_digits_are_scikit_learns_digits_read_without_importing_it(monkeypatch, through_sklearn):
    """The embedded digits, read from the CSV in scikit-learn's wheel, equal ``load_digits()`` exactly; where
    the file is not found they come through scikit-learn itself."""
    import importlib.util

    from sklearn.datasets import load_digits

    from probclr.data.sources import digits_arrays

    if through_sklearn:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    images, target = digits_arrays()
    d = load_digits()
    assert images.dtype == d.images.dtype and np.array_equal(images, d.images)
    assert target.dtype == d.target.dtype and np.array_equal(target, d.target)


def test_digits_default_needs_no_download():
    s = load_splits(DataConfig())
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (3, 16, 16)
    assert s.pretrain.images.shape[0] + s.test.images.shape[0] == 1797
    assert torch.bincount(s.test.labels).min() >= 30  # stratified split
    assert s.train.images.shape[0] + s.val.images.shape[0] == s.pretrain.images.shape[0]  # pool + validation


def test_cifar_jpeg_folder_real(cifar_slice):
    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice), val_size=0))
    assert s.train.images.shape == (600, 3, 32, 32) and s.test.images.shape == (200, 3, 32, 32)
    assert s.train.classes[:3] == ("airplane", "automobile", "bird")
    assert torch.bincount(s.train.labels).tolist() == [60] * 10
    # the same pixels as Pillow decodes
    first = sorted((cifar_slice / "train" / "airplane").iterdir())[0]
    ref = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(s.train.images[0], ref)


def test_cache_reused_and_rebuilt_when_source_changes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROBCLR_CACHE_DIR", str(cache))
    root = tmp_path / "imgs"
    write_images(root / "a", 3)
    write_images(root / "b", 3, start=10)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(root))
    first = load_splits(cfg)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and first.pretrain.images.shape[0] == 6
    assert torch.equal(load_splits(cfg).pretrain.images, first.pretrain.images)
    write_images(root / "b", 1, start=50)  # a new image: the fingerprint changes
    assert load_splits(cfg).pretrain.images.shape[0] == 7
    assert len(list(cache.glob("*.pt"))) == 2
    files[0].write_bytes(b"garbage")  # a damaged cache entry is rebuilt, not trusted
    assert load_splits(cfg).pretrain.images.shape[0] == 7


def test_flat_unlabeled_folder_and_modes(tmp_path):
    root = tmp_path / "flat"
    write_images(root, 2, mode="L")
    write_images(root, 2, mode="RGBA", start=2)
    write_images(root, 1, mode="P", start=4)
    Image.fromarray((np.arange(120).reshape(10, 12) * 500).astype(np.uint16)).save(root / "sixteen.png")
    s = load_splits(DataConfig(dataset="imagefolder", data_dir=str(root)))
    assert s.pretrain.images.shape == (6, 3, 10, 12)
    assert (s.pretrain.labels == -1).all() and s.test.images.shape[0] == 0
    sixteen = s.pretrain.images[-1]
    assert sixteen.max() > 200 and torch.equal(sixteen[0], sixteen[1])  # scaled 16-bit grey, not clipped


def test_resize_to_image_size(tmp_path):
    root = tmp_path / "mixed"
    write_images(root / "x", 2, size=(40, 20))
    write_images(root / "y", 2, size=(16, 16), start=5)
    with pytest.raises(DataError, match="data.image_size"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(root)))
    s = load_splits(DataConfig(dataset="imagefolder", data_dir=str(root), image_size=8))
    assert s.pretrain.images.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("content,match", [(b"", "cannot read image"), (b"not an image", "cannot read image")])
def test_unreadable_image_names_the_file(tmp_path, content, match):
    root = tmp_path / "bad"
    write_images(root / "a", 2)
    (root / "a" / "broken.jpg").write_bytes(content)
    with pytest.raises(DataError, match=f"{match}.*broken.jpg"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(root)))


def test_truncated_jpeg_names_the_file(tmp_path, cifar_slice):
    root = tmp_path / "trunc" / "a"
    root.mkdir(parents=True)
    good = sorted((cifar_slice / "train" / "cat").iterdir())[0].read_bytes()
    (root / "ok.jpg").write_bytes(good)
    (root / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(root.parent)))


def test_non_image_file_and_empty_folders(tmp_path):
    root = tmp_path / "d"
    write_images(root / "a", 1)
    (root / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt.*not an image"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(root)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "nope")))


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="--download"):
        load_splits(DataConfig(dataset="stl10", data_dir=str(tmp_path)))


def test_cifar_python_batches(tmp_path):
    """torchvision's cifar-10-batches-py layout (written here in the official pickle format)."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.RandomState(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        data = rng.randint(0, 256, (n, 3072), dtype=np.uint8)
        with open(root / name, "wb") as fh:
            pickle.dump({"data": data, "labels": list(range(n))}, fh)
    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=0))
    assert s.train.images.shape == (20, 3, 32, 32) and s.test.images.shape == (3, 3, 32, 32)
    with open(root / "test_batch", "rb") as fh:
        raw = pickle.load(fh)["data"]
    assert torch.equal(s.test.images[1].reshape(-1), torch.from_numpy(raw[1]))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batch_pickles_read_under_every_protocol(tmp_path, protocol):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 2)]:
        entry = {"batch_label": "training batch 1 of 5", "labels": [1, 2], "filenames": [b"a.png", b"b.png"],
                 "data": np.full((n, 3072), 7, dtype=np.uint8)}
        with open(root / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=protocol)
    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=0))
    assert s.train.images.shape == (10, 3, 32, 32) and int(s.train.images.max()) == 7


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_cifar_batch_is_refused_and_never_runs(tmp_path):
    """The CIFAR-10 python batches are pickles: they are read with a restricted unpickler, so a batch file
    crafted to run code is refused with one line naming the file, and its payload never runs."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Payload(marker)}, fh)
    with pytest.raises(DataError, match=r"refusing to read CIFAR-10 batch .*data_batch_1.*posix.system") as err:
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert "\n" not in str(err.value)
    assert not marker.exists()
    with open(root / "test_batch", "rb") as fh:
        pickle.load(fh)  # noqa: S301 - an unrestricted load does run it: the payload is real
    assert marker.exists()


def test_limits_are_seeded_subsets(cifar_slice):
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_slice), train_limit=100, test_limit=30, val_size=0)
    a, b = load_splits(cfg), load_splits(cfg)
    assert a.train.images.shape[0] == 100 and a.test.images.shape[0] == 30
    assert torch.equal(a.train.labels, b.train.labels) and a.pretrain is a.train


def test_stl10_binary_layout(tmp_path):
    """STL-10's binary files (written here in the official layout: column-major images, labels 1..10)."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.RandomState(0)
    hwc = {}
    for name, n in (("train", 4), ("test", 3), ("unlabeled", 5)):
        imgs = rng.randint(0, 256, (n, 96, 96, 3), dtype=np.uint8)  # (N, H, W, C)
        hwc[name] = imgs
        imgs.transpose(0, 3, 2, 1).tofile(folder / f"{name}_X.bin")  # (N, C, W, H) = column-major planes
        if name != "unlabeled":
            np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{name}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    s = load_splits(DataConfig(dataset="stl10", data_dir=str(tmp_path)))
    assert s.train.images.shape == (4, 3, 96, 96) and s.pretrain.images.shape == (9, 3, 96, 96)
    assert torch.equal(s.train.images[2].permute(1, 2, 0), torch.from_numpy(hwc["train"][2]))
    assert s.train.labels.tolist() == [0, 1, 2, 3] and (s.pretrain.labels[:5] == -1).all()
    assert s.train.classes[0] == "c0"


@pytest.mark.parametrize("entry, match", [
    ({"data": np.zeros((2, 3000), np.uint8), "labels": [1, 2]}, "shape (N, 3072)"),
    ({"data": "not pixels", "labels": [1, 2]}, "must be a uint8 array"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "has no 'labels'"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": "12"}, "list of integers"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}, "1 labels for 2 images"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 99]}, "label 99 at row 1 is not in 0..9"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]}, "must be a uint8 array"),
])
def test_malformed_cifar_batches_that_unpickle_fine_are_refused(tmp_path, entry, match):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    good = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump(entry if name == "data_batch_3" else good, fh)
    with pytest.raises(DataError, match=match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=0))


def test_absurd_image_sizes_are_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def png_header_only(path, w, h):  # a valid PNG header claiming w x h (its pixels would never fit)
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                         chunk(b"IEND", b""))

    root = tmp_path / "bomb" / "a"
    root.mkdir(parents=True)
    for side, match in ((20000, "decompression bomb"), (7000, "7000x7000 pixels")):  # Pillow's limit, then ours
        png_header_only(root / "x.png", side, side)
        with pytest.raises(DataError, match=match):
            load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "bomb"), image_size=32))
    strip = tmp_path / "strip" / "a"
    strip.mkdir(parents=True)
    Image.new("RGB", (1, 10000)).save(strip / "s.png")
    with pytest.raises(DataError, match="aspect ratio"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "strip"), image_size=32))


def test_a_relative_data_dir_is_recorded_absolute(tmp_path, monkeypatch):
    import numpy as np
    import yaml
    from PIL import Image

    from probclr.config import load_config
    from probclr.train.pretrain import pretrain

    for k in range(2):
        (tmp_path / "imgs" / f"c{k}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((32, 32, 3), 40 * i + k, dtype=np.uint8)).save(tmp_path / "imgs" / f"c{k}" / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.dataset=imagefolder", "data.data_dir=imgs", "optim.epochs=0", "optim.batch_size=4",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    pretrain(cfg, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(tmp_path / "imgs")  # another folder's evaluate reads the same images


def test_a_changed_or_foreign_cache_entry_is_rebuilt_never_trusted(tmp_path, monkeypatch):
    """An entry whose images were changed after writing (zeroed, poisoned) or another source's entry copied
    under this key is valid to torch.load; its recorded key and sha256 refuse it, and the folder is re-read."""
    monkeypatch.setenv("PROBCLR_CACHE_DIR", str(tmp_path / "cache"))
    for name, start in (("one", 0), ("two", 40)):
        write_images(tmp_path / name / "a", 3, start=start)
        write_images(tmp_path / name / "b", 3, start=start + 10)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "one"))
    truth = load_splits(cfg).pretrain.images.clone()
    (entry,) = (tmp_path / "cache").glob("*.pt")
    d = torch.load(entry, weights_only=True)
    d["train.images"] = torch.zeros_like(d["train.images"])  # zeroed, keeping the key and the old digest
    torch.save(d, entry)
    assert torch.equal(load_splits(cfg).pretrain.images, truth)
    load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "two")))
    (other,) = [p for p in (tmp_path / "cache").glob("*.pt") if p != entry]
    entry.write_bytes(other.read_bytes())  # another source's valid entry under this key
    assert torch.equal(load_splits(cfg).pretrain.images, truth)
