"""Image folders decoded straight into memory-mapped ``.npy`` files, for datasets whose decoded images do
not fit in memory (``data.residency: stream``, or ``auto`` when the decoded set would take more than half
of the available memory).

The files are decoded chunk by chunk (at most ``CHUNK`` decoded images in memory at once) into the cache
folder and opened as memory maps; every split is a view of them, so only the rows a batch reads are paged
in, and the page cache gives them back under memory pressure. Limits (``data.train_limit`` /
``test_limit``) and the validation split are applied to the file listing before decoding, exactly as
:func:`probclr.data.sources.limit` and :func:`probclr.data.validation.hold_out_validation` do to decoded
sets, and the training images are written label pool first, then the validation split (each in folder
order), so that both are contiguous views. Pool, validation and test images equal the in-memory path's;
pretraining reads the stored rows through ``Splits.pretrain_rows`` in the in-memory path's (canonical)
order, so the same seed gives the same run on every residency. An entry is keyed by the folder's files
(names, sizes, times), the image size, the
limits and the split; it is written under a temporary name and renamed when complete, and an entry that
does not load is rebuilt, never trusted.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from probclr.config import DataConfig
from probclr.data.cache import _fingerprint, cache_dir
from probclr.data.folders import decoded_chunks, list_image_folder
from probclr.data.splits import ImageSet, Splits
from probclr.data.validation import resolve_val_size, validation_indices
from probclr.errors import DataError
from probclr.io import OutputError, atomic_torch_save, safe_torch_load

CHUNK = 512  # images decoded at once
_FILES: dict[int, tuple[weakref.ref[Tensor], Path]] = {}  # id of a mapped tensor -> (the tensor, its file)


def mapped_file(images: Tensor) -> Path | None:
    """The ``.npy`` file of a tensor made by :func:`open_mapped` (None for any other tensor, views included)."""
    ref, path = _FILES.get(id(images), (None, None))
    return path if ref is not None and ref() is images else None


def open_mapped(path: Path) -> Tensor:
    """A uint8 (N, C, H, W) ``.npy`` file as a tensor over a copy-on-write memory map (nothing read yet)."""
    t = torch.from_numpy(np.load(path, mmap_mode="c"))
    key = id(t)
    _FILES[key] = (weakref.ref(t, lambda _: _FILES.pop(key, None)), path)
    return t


def npy_header(path: Path) -> tuple[tuple[int, ...], int]:
    """The shape of a uint8 ``.npy`` file and the byte offset of its data, from the header alone."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read(fh)
        return tuple(shape), fh.tell()


def chunks(images: Tensor, rows: int) -> Iterator[Tensor]:
    """``images.split(rows)``; for a whole mapped tensor read from its file with plain reads (no page faults,
    each chunk dropped from the page cache once read), so that a pass over a set larger than memory neither
    grows the process nor thrashes the cache."""
    path = mapped_file(images)
    if path is None:
        yield from images.split(rows)
        return
    _, offset = npy_header(path)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        for start in range(0, images.shape[0], rows):
            buf = torch.empty((min(rows, images.shape[0] - start), *images.shape[1:]), dtype=torch.uint8)
            view = memoryview(buf.numpy()).cast("B")
            got = 0
            while got < len(view):
                n = fh.readinto(view[got:])
                if not n:
                    raise DataError(f"{str(path)!r} ends early (a damaged cache entry): delete it and run again")
                got += n
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            yield buf


def decoded_bytes(n: int, first: Path, size: int | None) -> int:
    """The decoded size of ``n`` images as uint8 RGB, from the ``first`` file's header (all share one size or
    are resized to ``size``); 0 when that header does not read (decoding then reports the file)."""
    if size is None:
        try:
            with Image.open(first) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - an unreadable file is named by the decoder's own error
            return 0
    else:
        w = h = size
    return n * 3 * w * h


def decode_to_npy(paths: list[Path], size: int | None, dest: Path) -> None:
    """Decode ``paths`` in order into ``dest`` (N, 3, H, W) uint8, ``CHUNK`` images at a time; written to a
    temporary file and renamed when complete (nothing half-written is left on an error)."""
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    try:
        chunks = decoded_chunks(paths, size, CHUNK)
        _, first = next(chunks)  # (c, 3, H, W)
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *first.shape[1:]))
        offset = header.offset
        del header  # a sparse file with the .npy header; the rows are written with plain writes below
        with open(tmp, "r+b") as fh:
            fh.seek(offset)
            for chunk in itertools.chain([first], (c for _, c in chunks)):
                fh.write(np.ascontiguousarray(chunk).data)
                _drop_written(fh)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _drop_written(fh: BinaryIO) -> None:
    """Write the file's dirty pages out and drop them from the page cache, so that decoding a set larger than
    memory never holds more than a chunk of it (dirty pages cannot be reclaimed until written)."""
    fh.flush()
    os.fdatasync(fh.fileno())
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def take_indices(n_total: int, n: int | None, seed: int) -> Tensor:
    """The rows a seeded limit keeps, sorted (all rows when ``n`` is None or not smaller)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.sort(torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]).values


def _pool_then_val(labels: Tensor, cfg: DataConfig) -> tuple[Tensor, int]:
    """Row order of the labeled training file (label pool, then validation split) and the pool's size."""
    n_labeled = int((labels >= 0).sum())
    size = resolve_val_size(cfg, n_labeled) if n_labeled else 0
    if size == 0:
        return torch.arange(labels.numel()), labels.numel()
    pool, val = validation_indices(labels, size, cfg.val_seed)
    return torch.cat([pool, val]), pool.numel()


def entry_key(cfg: DataConfig, name: str, root: Path, *extra: str) -> str:
    """What a folder's decoded (or packed) splits depend on: its files (names, sizes, times), the image size,
    the limits and the validation split (and any ``extra``)."""
    parts = [name, str(root.resolve()), str(cfg.image_size), str(cfg.train_limit), str(cfg.test_limit),
             str(cfg.val_size), str(cfg.val_seed), cfg.dataset, *extra]
    return _fingerprint(parts, root)


class FolderPlan:
    """What to decode, in which order: the (limited) training files as pool then validation, the test files."""

    def __init__(self, cfg: DataConfig, root: Path, split: bool) -> None:
        if split:
            tr_paths, tr_labels, self.classes = list_image_folder(root / "train")
            te_paths, te_labels, te_classes = list_image_folder(root / "test")
            if te_classes != self.classes:
                raise DataError(f"{str(root)!r}: train and test class folders differ: {self.classes} vs {te_classes}")
        else:
            tr_paths, tr_labels, self.classes = list_image_folder(root)
            te_paths, te_labels = [], []
        self.has_pool = split or bool(self.classes)  # an unlabeled flat folder only pretrains
        rows = take_indices(len(tr_paths), cfg.train_limit, 0 if self.has_pool else 1)
        labels = torch.tensor(tr_labels, dtype=torch.int64)[rows]  # (N,)
        order, self.n_pool = _pool_then_val(labels, cfg) if self.has_pool else (torch.arange(rows.numel()), 0)
        self.train_paths = [tr_paths[i] for i in rows[order].tolist()]
        self.train_labels = labels[order]
        self.pretrain_rows = torch.argsort(order)  # (N,) stored row of each image in canonical (folder) order
        te_rows = take_indices(len(te_paths), cfg.test_limit, 2)
        self.test_paths = [te_paths[i] for i in te_rows.tolist()]
        self.test_labels = torch.tensor(te_labels, dtype=torch.int64)[te_rows] if te_paths else torch.zeros(0).long()


class FolderEntry:
    """A cache entry of a folder's splits, written from its :class:`FolderPlan` (``_put``) and read back
    (``_get``: None when missing or damaged); subclasses name the kind, the suffix and any extra key."""

    kind, suffix = "folder", ".entry"

    def __init__(self, cfg: DataConfig, name: str, root: Path) -> None:
        self.dir = cache_dir(cfg) / f"{name}-{entry_key(cfg, name, root, *self.key_extra())}{self.suffix}"
        self.cfg, self.root = cfg, root

    def key_extra(self) -> tuple[str, ...]:
        return ()

    def load(self, split: bool) -> Splits:
        """The entry's splits, writing it from the folder first when it is missing or damaged."""
        got = self._get()
        if got is None:
            self._put(FolderPlan(self.cfg, self.root, split))
            got = self._get()
        if got is None:
            raise OutputError(f"the {self.kind} cache entry {str(self.dir)!r} does not read back after writing it;"
                              " check the disk, or set data.cache_dir to another folder")
        return got

    def _put(self, plan: FolderPlan) -> None:
        raise NotImplementedError

    def _get(self) -> Splits | None:
        raise NotImplementedError


class MappedSplits(FolderEntry):
    """One cache entry: a folder's splits as memory-mapped files (see the module doc)."""

    kind, suffix = "memory-mapped", ".mapped"

    def _put(self, plan: FolderPlan) -> None:
        # every file is renamed into place when complete; the key fixes the content, so a reader that meets
        # another process's files in the middle of a rebuild still reads a consistent entry
        self.dir.mkdir(parents=True, exist_ok=True)
        decode_to_npy(plan.train_paths, self.cfg.image_size, self.dir / "train.npy")
        if plan.test_paths:
            decode_to_npy(plan.test_paths, self.cfg.image_size, self.dir / "test.npy")
        meta = {"train_labels": plan.train_labels, "test_labels": plan.test_labels, "classes": list(plan.classes),
                "n_pool": plan.n_pool, "has_pool": plan.has_pool, "pretrain_rows": plan.pretrain_rows,
                "files": {name: file_stamp(self.dir / name) for name in ("train.npy", "test.npy")
                          if (self.dir / name).is_file()}}
        atomic_torch_save(self.dir / "meta.pt", meta)

    def _get(self) -> Splits | None:
        try:
            meta = safe_torch_load(self.dir / "meta.pt", "cache entry")
            full = open_mapped(self.dir / "train.npy")  # (N, 3, H, W)
            test = open_mapped(self.dir / "test.npy") if meta["test_labels"].numel() else full[:0]
        except Exception:  # noqa: BLE001 - a missing or damaged entry is rebuilt, never trusted
            return None
        if not consistent(meta, full.shape[0], test.shape[0]) or not self._unchanged(meta):
            return None
        return splits_of(meta, full, test, lambda t, a, b: t[a:b])

    def _unchanged(self, meta: dict[str, Any]) -> bool:
        """Whether the image files are the ones the entry wrote (size and modification time as recorded):
        a file written to since — zeroed, truncated and regrown, replaced — is rebuilt, never trained on."""
        files = meta.get("files")
        if not isinstance(files, dict) or "train.npy" not in files:
            return False
        return all(file_stamp(self.dir / name) == stamp for name, stamp in files.items())


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of a file; (-1, -1) when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def consistent(meta: dict[str, Any], n_train: int, n_test: int) -> bool:
    """Whether a folder entry's record matches its files (an entry written before ``pretrain_rows`` was
    recorded, or a damaged one, is rebuilt)."""
    rows = meta.get("pretrain_rows")
    return (isinstance(rows, Tensor) and rows.shape == (n_train,) and meta["train_labels"].shape == (n_train,)
            and meta["test_labels"].shape == (n_test,)
            and torch.equal(torch.sort(rows).values, torch.arange(n_train)))


def splits_of(meta: dict[str, Any], full: Any, test: Any, part: Callable[[Any, int, int], Any]) -> Splits:
    """A folder entry's splits from its training images ``full`` (label pool, then validation split) and test
    images; ``part(images, start, stop)`` gives a view of rows (memory maps and packed JPEGs alike)."""
    labels, classes, n_pool = meta["train_labels"], tuple(meta["classes"]), int(meta["n_pool"])
    n, rows = labels.numel(), meta["pretrain_rows"]
    pretrain = ImageSet(full, labels, classes)
    if not meta["has_pool"]:
        empty = ImageSet(part(full, 0, 0), labels[:0], classes)
        return Splits(pretrain=pretrain, train=empty, test=empty, val=empty, pretrain_rows=rows)
    return Splits(pretrain=pretrain, train=ImageSet(part(full, 0, n_pool), labels[:n_pool], classes),
                  test=ImageSet(test, meta["test_labels"], classes),
                  val=ImageSet(part(full, n_pool, n), labels[n_pool:], classes), pretrain_rows=rows)


def folder_bytes(root: Path, size: int | None, limit: int | None) -> int:
    """The decoded size of a folder's images (at most ``limit`` of them), estimated from a bare count of the
    files and the first one's header (a full listing of 50,000 files takes ~1 s, this ~0.04 s); 0 when empty."""
    n, first = 0, None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [f for f in filenames if not f.startswith(".")]
        n += len(names)
        if first is None and names:
            first = Path(dirpath) / min(names)
    if first is None:
        return 0  # no files: the in-memory path reports the empty folder
    return decoded_bytes(min(n, limit) if limit is not None else n, first, size)
