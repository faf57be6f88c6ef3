"""Dataset sources by name -> :class:`Splits` of uint8 tensors (pretrain / labeled train / test)."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from probclr.config import DataConfig
from probclr.data.cache import DecodedCache
from probclr.data.encoded import EncodedSplits
from probclr.data.folders import read_image_folder
from probclr.data.mapped import MappedSplits, folder_bytes, take_indices
from probclr.data.residency import Residency, resolve
from probclr.data.splits import ImageSet, Splits
from probclr.data.validation import hold_out_validation
from probclr.errors import DataError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


def training_bytes(cfg: DataConfig) -> int:
    """The decoded size of the training images as uint8, from the source's format or file listing alone
    (nothing decoded): what ``data.residency: auto`` is resolved by."""
    limit = cfg.train_limit
    if cfg.dataset == "digits":
        return 1797 * 3 * 16 * 16
    if cfg.dataset == "stl10":
        return min(105_000, limit or 105_000) * 3 * 96 * 96
    if cfg.dataset == "cifar10":
        root, batches = _cifar10_batches(cfg)
        if batches.is_dir() and cfg.residency != "encoded":
            return min(50_000, limit or 50_000) * 3 * 32 * 32
        return folder_bytes(root / "train", cfg.image_size, limit)
    if not cfg.data_dir:
        return 0  # imagefolder() names the missing --data-dir
    root = Path(cfg.data_dir).expanduser()
    split = (root / "train").is_dir() and (root / "test").is_dir()
    return folder_bytes(root / "train" if split else root, cfg.image_size, limit)


def resolve_residency(cfg: DataConfig, device: torch.device) -> Residency:
    """``data.residency`` for these images on ``device``: the one place ``auto`` is decided."""
    return resolve(cfg.residency, training_bytes(cfg) if cfg.residency == "auto" else 0, device)


def load_splits(cfg: DataConfig, residency: Residency | None = None) -> Splits:
    """The dataset named by ``cfg.dataset``, decoded once and cached, limited if asked, with the
    validation split carved out of the labeled training images (``Splits.val``). ``residency``: where the
    caller will keep the training images (resolved by :func:`resolve_residency`; default: for this process's
    CPU) — ``stream`` decodes an image folder straight into memory maps, ``encoded`` packs its files."""
    cfg = dataclasses.replace(cfg, residency=residency or resolve_residency(cfg, torch.device("cpu")))
    if cfg.residency == "encoded" and cfg.dataset in ("digits", "stl10"):
        raise DataError(f"data.residency encoded packs an image folder's files; dataset {cfg.dataset} has none:"
                        " use auto, device, host or stream")
    if cfg.dataset == "digits":
        if cfg.data_dir:  # an option a command cannot honour is an error, never a no-op
            raise DataError(f"--data-dir {cfg.data_dir!r} was given but the digits dataset is embedded and reads no"
                            " folder; pass --dataset cifar10, stl10 or imagefolder, or leave --data-dir out")
        s = digits()
    elif cfg.dataset == "cifar10":
        s = cifar10(cfg)
    elif cfg.dataset == "stl10":
        s = stl10(cfg)
    else:
        s = imagefolder(cfg)
    if s.val is not None:  # memory-mapped (probclr.data.mapped): limited and split before decoding
        return s
    return hold_out_validation(limit(s, cfg.train_limit, cfg.test_limit), cfg)


def _take(part: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or n >= part.images.shape[0]:
        return part
    idx = take_indices(part.images.shape[0], n, seed)
    return ImageSet(part.images[idx], part.labels[idx], part.classes)


def limit(s: Splits, train: int | None, test: int | None) -> Splits:
    """Seeded random subsets (the same images every run) for quick experiments and tests."""
    same = s.pretrain is s.train
    tr = _take(s.train, train, 0)
    return Splits(tr if same else _take(s.pretrain, train, 1), tr, _take(s.test, test, 2))


def _data_dir(cfg: DataConfig, default_sub: str) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    env = os.environ.get("PROBCLR_DATA_DIR")
    if env:
        for sub in (default_sub, ""):
            cand = Path(env) / sub
            if cand.is_dir():
                return cand
    return Path("data") / default_sub


# --------------------------------------------------------------------------------------------------
# digits: the embedded default


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) pixel counts 0..16 and (1797,) labels: ``sklearn.datasets.load_digits``'s ``images`` and
    ``target``, read from the CSV inside scikit-learn's wheel without importing scikit-learn (whose datasets
    module costs ~1 s of imports in every process that only wants these 115 kB); through scikit-learn when
    its wheel lays the file out otherwise."""
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(roots[0]) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixels, then the label
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def digits(size: int = 16) -> Splits:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), upsampled to ``size`` and made RGB.

    A fixed stratified 80/20 split (seed 0); no download: the data ship inside scikit-learn's wheel.
    """
    images, target = digits_arrays()
    x = torch.from_numpy(images).float().div(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.mul(255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (N, 3, s, s)
    y = torch.from_numpy(target).long()
    rng = np.random.RandomState(0)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(target == c)
        test_mask[rng.permutation(idx)[: len(idx) // 5]] = True
    tm = torch.from_numpy(test_mask)
    classes = tuple(str(c) for c in range(10))
    train = ImageSet(x[~tm], y[~tm], classes)
    return Splits(pretrain=train, train=train, test=ImageSet(x[tm], y[tm], classes))


# --------------------------------------------------------------------------------------------------
# CIFAR-10


# Only what the official CIFAR-10 python batches (numpy arrays, lists, strings) need to be rebuilt: a batch
# file crafted to run code when unpickled names some other callable and is refused (after the Python docs'
# "Restricting Globals" recipe).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never does")
        return super().find_class(module, name)


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            entry = _BatchUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"refusing to read CIFAR-10 batch {str(path)!r}: {err}") from err
    if not isinstance(entry, dict) or "data" not in entry:
        raise DataError(f"{str(path)!r} is not a CIFAR-10 batch (no 'data' array)")
    return entry


def _batch_arrays(entry: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N, 3, 32, 32) uint8 and labels (N,) in 0..9, after checking every field."""
    data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}".strip()
        raise DataError(f"CIFAR-10 batch {str(path)!r}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
    if labels is None:
        raise DataError(f"CIFAR-10 batch {str(path)!r} has no 'labels'")
    if not isinstance(labels, list | np.ndarray) or not all(isinstance(v, int | np.integer) for v in labels):
        raise DataError(f"CIFAR-10 batch {str(path)!r}: 'labels' must be a list of integers")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],):
        raise DataError(f"CIFAR-10 batch {str(path)!r}: {y.size} labels for {data.shape[0]} images")
    bad = np.nonzero((y < 0) | (y > 9))[0]
    if bad.size:
        raise DataError(f"CIFAR-10 batch {str(path)!r}: label {int(y[bad[0]])} at row {int(bad[0])} is not in 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar_batches(root: Path) -> Splits:
    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            path = root / name
            if not path.is_file():
                raise DataError(f"CIFAR-10 batch file {str(path)!r} is missing")
            entry = _load_batch(path)  # the official format is a pickle of numpy arrays; read restricted
            x, y = _batch_arrays(entry, path)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    xtr, ytr = read([f"data_batch_{i}" for i in range(1, 6)])
    xte, yte = read(["test_batch"])
    train = ImageSet(xtr, ytr, CIFAR10_CLASSES)
    return Splits(pretrain=train, train=train, test=ImageSet(xte, yte, CIFAR10_CLASSES))


def _split_folders(root: Path, size: int | None) -> Splits:
    train = read_image_folder(root / "train", size)
    test = read_image_folder(root / "test", size)
    if train.classes != test.classes:
        raise DataError(f"{str(root)!r}: train and test class folders differ: {train.classes} vs {test.classes}")
    return Splits(pretrain=train, train=train, test=test)


def _cifar10_batches(cfg: DataConfig) -> tuple[Path, Path]:
    root = _data_dir(cfg, "cifar10-jpeg")
    return root, root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"


def cifar10_test_in_original_order(cfg: DataConfig) -> bool:
    """True when ``cifar10`` reads torchvision's python batches, whose test batch is the original order."""
    return cfg.dataset == "cifar10" and _cifar10_batches(cfg)[1].is_dir()


def cifar10(cfg: DataConfig) -> Splits:
    """CIFAR-10 from torchvision's python batches or an ImageFolder copy (train/, test/), cached once decoded."""
    root, batches = _cifar10_batches(cfg)
    if cfg.residency == "encoded" and not ((root / "train").is_dir() and (root / "test").is_dir()):
        raise DataError(f"data.residency encoded packs an image folder's files; {str(root)!r} has no train/ and test/"
                        " image folders: use auto, device, host or stream, or a JPEG copy of CIFAR-10")
    if cfg.residency == "encoded":  # the JPEG copy, even where the python batches lie beside it
        return EncodedSplits(cfg, "cifar10-folder", root).load(split=True)
    if batches.is_dir():
        entry = DecodedCache(cfg, "cifar10-batches", batches)
        return entry.get() or entry.put(_read_cifar_batches(batches))
    if (root / "train").is_dir() and (root / "test").is_dir():
        if cfg.residency == "stream":
            return MappedSplits(cfg, "cifar10-folder", root).load(split=True)
        entry = DecodedCache(cfg, "cifar10-folder", root)
        return entry.get() or entry.put(_split_folders(root, cfg.image_size))
    if cfg.download:
        import torchvision

        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        entry = DecodedCache(cfg, "cifar10-batches", batches)
        return entry.get() or entry.put(_read_cifar_batches(batches))
    raise DataError(
        f"no CIFAR-10 in {str(root)!r}: pass --data-dir DIR holding cifar-10-batches-py or train/<class>/ and"
        " test/<class>/ image folders, or add --download to fetch it with torchvision"
    )


# --------------------------------------------------------------------------------------------------
# STL-10 and image folders


def _read_stl10_binary(folder: Path) -> Splits:
    """STL-10's binary layout (``stl10_binary/``): uint8 images stored column-major, labels 1..10."""

    def images(name: str) -> torch.Tensor:
        path = folder / name
        if not path.is_file():
            raise DataError(f"STL-10 file {str(path)!r} is missing")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise DataError(f"STL-10 file {str(path)!r} is truncated ({raw.size} bytes)")
        return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(np.fromfile(folder / name, dtype=np.uint8).astype(np.int64) - 1)

    names = folder / "class_names.txt"
    classes = tuple(names.read_text().split()) if names.is_file() else tuple(str(i) for i in range(10))
    train = ImageSet(images("train_X.bin"), labels("train_y.bin"), classes)
    test = ImageSet(images("test_X.bin"), labels("test_y.bin"), classes)
    unlabeled = images("unlabeled_X.bin")
    pretrain = ImageSet(
        torch.cat([unlabeled, train.images]),
        torch.cat([torch.full((unlabeled.shape[0],), -1, dtype=torch.int64), train.labels]),
        classes,
    )  # the paper pretrains on unlabeled + train
    return Splits(pretrain=pretrain, train=train, test=test)


def stl10(cfg: DataConfig) -> Splits:
    """STL-10: torchvision downloads it (when allowed); probclr reads the binary files itself."""
    root = _data_dir(cfg, "stl10")
    folder = root if root.name == "stl10_binary" else root / "stl10_binary"
    if not folder.is_dir():
        if not cfg.download:
            raise DataError(
                f"no STL-10 in {str(root)!r} (expected {str(folder)!r}): pass --data-dir DIR holding"
                " stl10_binary, or add --download to fetch it with torchvision (2.6 GB)"
            )
        import torchvision

        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.STL10(str(root), split="train", download=True)
    entry = DecodedCache(cfg, "stl10", folder)
    return entry.get() or entry.put(_read_stl10_binary(folder))


def imagefolder(cfg: DataConfig) -> Splits:
    """A user's images: ``DIR/train`` + ``DIR/test`` class folders, class folders, or one flat folder.

    Without a ``test`` split, every image is used for pretraining and there is no evaluation set.
    """
    if not cfg.data_dir:
        raise DataError("dataset imagefolder needs --data-dir pointing at your image folder")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    if cfg.residency == "encoded":
        return EncodedSplits(cfg, "imagefolder-split" if split else "imagefolder", root).load(split)
    if cfg.residency == "stream":
        return MappedSplits(cfg, "imagefolder-split" if split else "imagefolder", root).load(split)
    if split:
        entry = DecodedCache(cfg, "imagefolder-split", root)
        return entry.get() or entry.put(_split_folders(root, cfg.image_size))
    entry = DecodedCache(cfg, "imagefolder", root)
    return entry.get() or entry.put(_one_folder(root, cfg.image_size))


def _one_folder(root: Path, size: int | None) -> Splits:
    """One folder (class subfolders or flat): every image pretrains; labeled images form the label pool."""
    s = read_image_folder(root, size)
    empty = ImageSet(s.images[:0], s.labels[:0], s.classes)
    return Splits(pretrain=s, train=s if s.classes else empty, test=empty)
