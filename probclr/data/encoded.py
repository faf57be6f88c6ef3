"""The compressed store (``data.residency: encoded``): an image folder kept as its files' original bytes
(JPEG, PNG, ...) in one packed file, decoded batch by batch while pretraining reads it.

For folders whose decoded images fit neither in memory nor on disk: the pack is the size of the files
(CIFAR-10's 50,000 training JPEGs: 44 MB packed against 146 MB decoded; a 128-px folder of 87,381 JPEGs:
489 MiB against 4,552 MiB of memory maps, BENCHMARKS §13). The folder is listed, limited and split exactly as
:mod:`probclr.data.mapped` does (label pool, then validation split, then test); every file is decoded once
to check it (a damaged file is refused before a run starts, not found at step 10,000), and its bytes are
packed in that order into the cache entry ``{name}-{key}.encoded/`` (``train.bin`` with its index
``train.bin-index.npz``, the same for test, ``meta.pt``); every split is a view of the packs
(:class:`EncodedImages`).

Indexing an :class:`EncodedImages` decodes on the CPU to the pixels of every other path: by torchvision's
JPEG decoder the files checked when packing to decode identically to the folder decoder
(:func:`probclr.data.folders.decode_one`; ~4x faster on 32-px JPEGs), by that decoder the rest; so its
images, and on the CPU a whole run, equal the memory-mapped path's bit for bit (tested). On CUDA,
pretraining batches are decoded on the GPU (nvJPEG, through ``torchvision.io.decode_jpeg(device='cuda')``)
and resized there; those pixels differ slightly from the CPU decoder's (another IDCT and resize), so a CUDA
run is not bit-identical to a CPU-decoded one (never yet run on a GPU). Evaluation (features, probes,
analysis) always decodes on the CPU.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import PIL
import torch
from torch import Tensor

from probclr.data.folders import DECODE_THREADS, check_same_size, decode_one
from probclr.data.mapped import CHUNK, FolderEntry, FolderPlan, consistent, splits_of
from probclr.data.splits import Splits
from probclr.errors import DataError
from probclr.io import atomic_torch_save, safe_torch_load

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=DECODE_THREADS)
    return _POOL


class _Pack:
    """One packed file: the encoded images back to back, ``offsets`` (N + 1,) where each one starts, ``fast``
    (N,) whether torchvision's JPEG decoder gave exactly the folder decoder's pixels for it (checked when
    packing), and the files' names (for errors)."""

    def __init__(self, path: Path, offsets: np.ndarray, fast: np.ndarray, names: list[str], crc: np.ndarray) -> None:
        self.path, self.offsets, self.fast, self.names, self.crc = path, offsets, fast, names, crc
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, rows: np.ndarray) -> list[bytes]:
        """The encoded bytes of ``rows`` (read in file order, returned in the given order)."""
        out: list[bytes] = [b""] * len(rows)
        for j in np.argsort(rows, kind="stable"):
            start, stop = int(self.offsets[rows[j]]), int(self.offsets[rows[j] + 1])
            out[j] = os.pread(self.fd, stop - start, start)
            if len(out[j]) != stop - start:
                raise DataError(f"{str(self.path)!r} ends early (a damaged cache entry): delete it and run again")
            if zlib.crc32(out[j]) != int(self.crc[rows[j]]):  # every image's bytes checked as they are read
                raise DataError(f"{str(self.path)!r} is damaged (the bytes of {self.names[rows[j]]!r} fail their "
                                f"checksum): delete {str(self.path.parent)!r} and run again to rebuild it")
        return out

    def __del__(self) -> None:
        if hasattr(self, "fd"):
            os.close(self.fd)


class EncodedImages:
    """Rows of a pack, as (N, C, H, W) uint8 images that are decoded when indexed: ``x[idx]`` (an int, a
    slice, an index tensor or array) and ``x.split(n)`` give decoded tensors; :meth:`part` a lazy view."""

    dtype = torch.uint8

    def __init__(self, pack: _Pack, rows: np.ndarray, chw: tuple[int, int, int], size: int | None) -> None:
        self.pack, self.rows, self.chw, self.size = pack, rows, chw, size

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.chw))

    def __len__(self) -> int:
        return len(self.rows)

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def element_size(self) -> int:
        return 1

    def part(self, start: int, stop: int) -> EncodedImages:
        """Rows ``start:stop`` as a view (nothing decoded)."""
        return EncodedImages(self.pack, self.rows[start:stop], self.chw, self.size)

    def digest(self) -> bytes:
        """What these images are: the pack (named by its entry's key) and the rows of it."""
        h = hashlib.sha256(str(self.pack.path.resolve()).encode("utf-8", "surrogateescape"))
        h.update(self.rows.astype(np.int64).tobytes())
        return h.digest()

    def encoded(self, idx: Any) -> Encoded:
        """The encoded bytes of the images at ``idx``, with their names and fast-decode flags."""
        rows = self.rows[_as_index(idx)]
        return Encoded(self.pack.read(rows), [self.pack.names[r] for r in rows.tolist()], self.pack.fast[rows])

    def __getitem__(self, idx: Any) -> Tensor:
        if isinstance(idx, Tensor | np.ndarray) and idx.ndim == 0:
            idx = int(idx)
        if isinstance(idx, int | np.integer):
            return self[[int(idx)]][0]  # (C, H, W)
        return decode_cpu(self.encoded(idx), self.size, self.chw)  # (B, C, H, W)

    def split(self, n: int) -> Iterator[Tensor]:
        for start in range(0, len(self), n):
            yield self[slice(start, start + n)]


def _as_index(idx: Any) -> Any:
    if isinstance(idx, Tensor):
        return idx.cpu().numpy()
    return idx


class Encoded(NamedTuple):
    """Some images of a pack, still encoded."""
    datas: list[bytes]
    names: list[str]
    fast: np.ndarray  # (B,) bool: torchvision's decoder gives the folder decoder's pixels exactly


def decode_cpu(enc: Encoded, size: int | None, chw: tuple[int, ...]) -> Tensor:
    """Encoded images -> (B, C, H, W) uint8 with the folder decoder's pixels: the JPEGs checked to decode
    identically by torchvision's decoder (~4x faster on 32 px images), the rest by the folder decoder in
    threads; every image has the pack's size (checked when packing)."""
    out = torch.empty((len(enc.datas), *chw), dtype=torch.uint8)  # (B, C, H, W)
    fast = np.flatnonzero(enc.fast).tolist()
    if fast:
        out[fast] = torch.stack(_decode_jpegs([enc.datas[i] for i in fast], torch.device("cpu")))
    slow = np.flatnonzero(~enc.fast).tolist()
    arrays = list(_pool().map(lambda i: decode_one(Path(enc.names[i]), size, enc.datas[i]), slow))
    if arrays:
        check_same_size([Path(enc.names[i]) for i in slow], arrays, Path(enc.names[slow[0]]), (chw[1], chw[2], chw[0]))
        out[slow] = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2))
    return out


def _decode_jpegs(datas: list[bytes], device: torch.device) -> list[Tensor]:
    """JPEG bytes -> [(3, h, w) uint8] by torchvision (libjpeg-turbo on the CPU, nvJPEG on CUDA). torchvision
    0.29 deprecates its decoders in favour of TorchCodec, which probclr does not depend on yet: the warning is
    silenced around these calls instead of being printed for every batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]  # (bytes,) each
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)  # type: ignore[return-value]


def _fast_flags(datas: list[bytes], arrays: list[np.ndarray]) -> np.ndarray:
    """(n,) whether torchvision decodes each file to exactly the folder decoder's (H, W, 3) pixels."""
    fast = np.zeros(len(datas), dtype=bool)
    jpeg = [i for i, d in enumerate(datas) if d[:2] == b"\xff\xd8"]
    for i in jpeg:
        try:
            got = _decode_jpegs([datas[i]], torch.device("cpu"))[0]  # (3, h, w)
        except RuntimeError:
            continue
        fast[i] = tuple(got.shape) == (3, *arrays[i].shape[:2]) and bool(
            (got.permute(1, 2, 0).numpy() == arrays[i]).all())
    return fast


def pack_files(paths: list[Path], size: int | None, dest: Path) -> tuple[int, int, int]:
    """Check-decode ``paths`` (``CHUNK`` at a time, in threads) and write their bytes in order to ``dest``, with
    the index (offsets, fast-decode flags) beside it; both renamed into place when complete. Returns the
    decoded (C, H, W)."""
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    offsets = np.zeros(len(paths) + 1, dtype=np.int64)
    fast = np.zeros(len(paths), dtype=bool)
    crc = np.zeros(len(paths), dtype=np.int64)  # zlib.crc32 of each image's bytes, checked at every read
    chw: tuple[int, int, int] | None = None
    try:
        with open(tmp, "wb") as fh:
            for start in range(0, len(paths), CHUNK):
                part = paths[start:start + CHUNK]
                datas = [p.read_bytes() for p in part]
                arrays = list(_pool().map(lambda a: decode_one(a[0], size, a[1]), zip(part, datas, strict=True)))
                if chw is None:
                    h, w, c = arrays[0].shape
                    chw = (c, h, w)
                check_same_size(part, arrays, paths[0], (chw[1], chw[2], chw[0]))
                fast[start:start + len(part)] = _fast_flags(datas, arrays)
                for i, data in enumerate(datas):
                    fh.write(data)
                    offsets[start + i + 1] = offsets[start + i] + len(data)
                    crc[start + i] = zlib.crc32(data)
            fh.flush()
            os.fsync(fh.fileno())
        with open(_index_path(tmp), "wb") as ih:
            np.savez(ih, offsets=offsets, fast=fast, crc=crc)
        os.replace(_index_path(tmp), _index_path(dest))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        _index_path(tmp).unlink(missing_ok=True)
    assert chw is not None
    return chw


def _index_path(pack: Path) -> Path:
    return pack.with_name(f"{pack.name}-index.npz")


def _open_pack(path: Path, names: list[str]) -> _Pack:
    with np.load(_index_path(path)) as index:
        offsets, fast, crc = index["offsets"], index["fast"], index["crc"]  # an index without checksums: rebuilt
    n = len(names)
    if offsets.shape != (n + 1,) or fast.shape != (n,) or crc.shape != (n,) or int(offsets[-1]) != path.stat().st_size:
        raise DataError(f"{str(path)!r} does not match its index")
    return _Pack(path, offsets, fast, names, crc)


class EncodedSplits(FolderEntry):
    """One cache entry: a folder's splits as packed encoded files (see the module doc)."""

    kind, suffix = "encoded", ".encoded"

    def key_extra(self) -> tuple[str, ...]:
        # the fast-decode flags hold for the decoders that checked them: their versions are part of the key
        import torchvision  # imported where it is used (decoding needs it anyway): ~2 s that other runs skip

        return f"pillow {PIL.__version__}", f"torchvision {torchvision.__version__}"

    def _put(self, plan: FolderPlan) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        chw = pack_files(plan.train_paths, self.cfg.image_size, self.dir / "train.bin")
        if plan.test_paths:
            test_chw = pack_files(plan.test_paths, self.cfg.image_size, self.dir / "test.bin")
            if test_chw != chw:
                raise DataError(f"the test images are {test_chw[2]}x{test_chw[1]} but the training images are"
                                f" {chw[2]}x{chw[1]}; set data.image_size to resize all images")
        meta = {"train_labels": plan.train_labels, "test_labels": plan.test_labels, "classes": list(plan.classes),
                "n_pool": plan.n_pool, "has_pool": plan.has_pool, "pretrain_rows": plan.pretrain_rows, "chw": list(chw),
                "train_names": [str(p) for p in plan.train_paths], "test_names": [str(p) for p in plan.test_paths]}
        atomic_torch_save(self.dir / "meta.pt", meta)

    def _get(self) -> Splits | None:
        size = self.cfg.image_size
        try:
            meta = safe_torch_load(self.dir / "meta.pt", "cache entry")
            chw = tuple(int(v) for v in meta["chw"])
            full = EncodedImages(_open_pack(self.dir / "train.bin", meta["train_names"]),
                                 np.arange(len(meta["train_names"])), chw, size)  # type: ignore[arg-type]
            test = (EncodedImages(_open_pack(self.dir / "test.bin", meta["test_names"]),
                                  np.arange(len(meta["test_names"])), chw, size)  # type: ignore[arg-type]
                    if meta["test_names"] else full.part(0, 0))
        except Exception:  # noqa: BLE001 - a missing or damaged entry is rebuilt, never trusted
            return None
        if not consistent(meta, full.shape[0], test.shape[0]):
            return None
        return splits_of(meta, full, test, lambda t, a, b: t.part(a, b))


def decode_batch(images: EncodedImages, idx: Tensor, device: torch.device) -> Tensor:
    """The images at ``idx`` decoded onto ``device`` (B, C, H, W) uint8: on CUDA the JPEGs by nvJPEG in one
    batched call and resized there, anything else (and a batch nvJPEG refuses) by the CPU decoder."""
    enc = images.encoded(idx)
    if device.type != "cuda":
        return decode_cpu(enc, images.size, images.chw)
    out = torch.empty((len(enc.datas), *images.chw), dtype=torch.uint8, device=device)  # (B, C, H, W)
    jpeg = [i for i, d in enumerate(enc.datas) if d[:2] == b"\xff\xd8"]
    try:
        if jpeg:
            out[jpeg] = torch.stack([_fit(x, images.size) for x in _decode_jpegs([enc.datas[i] for i in jpeg], device)])
    except RuntimeError:  # nvJPEG refuses the batch (a CMYK JPEG, say): the CPU decodes it
        jpeg = []
    rest = sorted(set(range(len(enc.datas))) - set(jpeg))
    if rest:
        part = Encoded([enc.datas[i] for i in rest], [enc.names[i] for i in rest], enc.fast[rest])
        out[rest] = decode_cpu(part, images.size, images.chw).pin_memory().to(device, non_blocking=True)
    return out


def _fit(img: Tensor, size: int | None) -> Tensor:
    """(3, h, w) uint8 -> (3, size, size): bilinear (antialiased) resize of the shorter side, centre crop."""
    if size is None:
        return img
    h, w = img.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = torch.nn.functional.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True)
        img = x[0].round().clamp(0, 255).to(torch.uint8)  # (3, nh, nw)
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[:, top:top + size, left:left + size]
    return img
