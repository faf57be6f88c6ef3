"""Where the uint8 training images live while pretraining reads batches from them (``data.residency``).

- ``device``: the whole set on the training device; a batch is one index (the default when it fits);
- ``host``: in (pinned, on CUDA) host memory; each batch is gathered on the host and copied asynchronously;
- ``stream``: memory-mapped from an ``.npy`` file in the cache folder; each batch reads only its rows, in
  file order, then restores the batch order. Image folders are decoded straight into such files, chunk by
  chunk (:mod:`probclr.data.mapped`), so the decoded set is never in memory; other sources (CIFAR-10's
  python batches, STL-10's binaries, digits) are decoded in memory and then written once, keyed by the
  images' contents, and let go (the page cache holds what the OS can spare).
- ``encoded``: image folders only; the files' original bytes packed in the cache folder and decoded batch
  by batch (:mod:`probclr.data.encoded`: on the CPU to the folder decoder's pixels, on CUDA by nvJPEG), for folders
  whose decoded images fit neither in memory nor on disk. Never chosen by ``auto``.
- ``auto``: decided once, before anything is decoded (:func:`resolve`, from the decoded size that
  ``probclr.data.sources.training_bytes`` reads off the source's format or file listing): ``stream`` if the
  decoded training images would take over half the machine's available memory (an image folder is then
  decoded straight into memory maps), else ``host`` if on CUDA they would take half the device's free
  memory or more, else ``device``. The resolved value travels as a typed :data:`Residency` from
  ``load_splits`` to :func:`make_source`; nothing below decides again.

With ``host``, ``stream`` and ``encoded`` the next batch is gathered, read or decoded in a background thread
while the current step runs (:func:`batches`; on CUDA its copy is queued on the default stream).
Augmentation stays batched on the training device in every mode. The same indices give the same uint8 batch
in every mode, and a folder's cache entry, which stores its rows in another order, is read in the in-memory
path's order (:class:`CanonicalOrder`), so a run is bit-identical whatever its residency (tested on the CPU).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from probclr.data.encoded import EncodedImages, decode_batch
from probclr.data.mapped import mapped_file, npy_header
from probclr.errors import DataError
from probclr.io import atomic_write_bytes

RESIDENCIES = ("auto", "device", "host", "stream", "encoded")


class BatchSource(Protocol):
    """Where pretraining images live: gives the uint8 batch at given indices on the training device."""
    shape: tuple[int, ...]

    def batch(self, idx: Tensor) -> Tensor: ...


class DeviceSource:
    """All images resident on the training device; a batch is an index."""
    def __init__(self, images: Tensor, device: torch.device) -> None:
        self.images = images.to(device)
        self.shape = tuple(images.shape)

    def batch(self, idx: Tensor) -> Tensor:
        return self.images[idx]  # (B, C, H, W) uint8 on the device


class HostSource:
    """Images in host memory (pinned on CUDA); each batch is copied to the device."""
    def __init__(self, images: Tensor, device: torch.device) -> None:
        self.images = images.pin_memory() if device.type == "cuda" else images
        self.device, self.shape = device, tuple(images.shape)

    def batch(self, idx: Tensor) -> Tensor:
        rows = self.images[idx.cpu()]  # (B, C, H, W) gathered on the host
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=True)


class StreamSource:
    """Images in an .npy file on disk; each batch's rows are read with positioned reads (no memory map: page
    faults under memory pressure read far more than they use) and copied to the device."""
    def __init__(self, path: Path, device: torch.device) -> None:
        shape, self.offset = npy_header(path)  # (N, C, H, W) uint8; only the header is read
        self.device, self.shape = device, shape
        self.row = int(np.prod(self.shape[1:]))
        self.fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead around each row

    def batch(self, idx: Tensor) -> Tensor:
        order = idx.cpu().numpy()
        cuda = self.device.type == "cuda"
        out = torch.empty((len(order), *self.shape[1:]), dtype=torch.uint8, pin_memory=cuda)  # (B, C, H, W)
        rows = out.numpy()
        for j in np.argsort(order, kind="stable"):  # in file order, each into its batch position
            view = memoryview(rows[j]).cast("B")
            if os.preadv(self.fd, [view], self.offset + int(order[j]) * self.row) != self.row:
                raise DataError(f"image {int(order[j])} of the stream file ends early (a damaged cache entry):"
                                " delete the cache folder's entry and run again")
        return out.to(self.device, non_blocking=cuda)  # pinned on CUDA: the copy overlaps the step

    def __del__(self) -> None:
        if hasattr(self, "fd"):
            os.close(self.fd)


class CanonicalOrder:
    """A source whose store keeps its rows in another order: the step asks for canonical indices (the in-memory
    path's order) and gets those images, read from their stored rows (``Splits.pretrain_rows``)."""
    def __init__(self, inner: BatchSource, rows: Tensor) -> None:
        self.inner, self.rows, self.shape = inner, rows.long(), inner.shape

    def batch(self, idx: Tensor) -> Tensor:
        if self.rows.device != idx.device:
            self.rows = self.rows.to(idx.device)
        return self.inner.batch(self.rows[idx])  # (B, C, H, W): canonical images idx


class EncodedSource:
    """Images packed as their encoded files; each batch is read and decoded (on CUDA, on the GPU)."""
    def __init__(self, images: EncodedImages, device: torch.device) -> None:
        self.images, self.device, self.shape = images, device, tuple(images.shape)

    def batch(self, idx: Tensor) -> Tensor:
        return decode_batch(self.images, idx, self.device)  # (B, C, H, W) uint8 on the device


Residency = Literal["device", "host", "stream", "encoded"]  # where the pretraining images live, resolved
AHEAD = ("host", "stream", "encoded")  # residencies whose batches are fetched one step ahead


def batches(source: BatchSource, index: Callable[[int], Tensor], steps: range,
            ahead: bool) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(step, its rows ``index(step)``, their uint8 batch) for each of ``steps``; ``index`` is called once per
    step, on the caller's thread. With ``ahead`` the next batch is fetched in a background thread (on the
    caller's current CUDA device) while the caller works on this one. The batches are the same either way."""
    if not ahead:
        for i in steps:
            rows = index(i)
            yield i, rows, source.batch(rows)
        return
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    same_device = (torch.cuda.set_device, (torch.cuda.current_device(),)) if cuda else (None, ())
    with ThreadPoolExecutor(max_workers=1, initializer=same_device[0], initargs=same_device[1]) as pool:
        fetched: tuple[Tensor, Future[Tensor]] | None = None  # the next step's rows, their batch on its way
        for i in steps:
            if fetched is None:
                rows = index(i)
                x = source.batch(rows)  # (B, C, H, W)
            else:
                rows, x = fetched[0], fetched[1].result()
            later = index(i + 1) if i + 1 in steps else None
            fetched = (later, pool.submit(source.batch, later)) if later is not None else None
            yield i, rows, x


def _images_digest(images: Tensor | np.ndarray) -> str:
    h = hashlib.sha256(f"{tuple(images.shape)}".encode())
    h.update(np.ascontiguousarray(images))
    return h.hexdigest()[:20]


def _holds(path: Path, digest: str) -> bool:
    """Whether the ``.npy`` file at ``path`` holds the images its name promises (a zeroed or rewritten file
    does not: it is rewritten, never trained on)."""
    try:
        return _images_digest(np.load(path, mmap_mode="r")) == digest
    except (OSError, ValueError):
        return False


def memmap_file(images: Tensor, cache_dir: Path) -> Path:
    """The images as an ``.npy`` file under ``cache_dir``, named by their contents (written once; its
    contents checked against the name before each use)."""
    digest = _images_digest(images.contiguous().numpy())
    path = Path(cache_dir) / f"stream-{digest}.npy"
    if not (path.is_file() and _holds(path, digest)):
        import io

        buf = io.BytesIO()
        np.save(buf, images.numpy())
        atomic_write_bytes(path, buf.getvalue())
    return path


def resolve(residency: Literal["auto"] | Residency, nbytes: int, device: torch.device) -> Residency:
    """``data.residency`` made concrete, once, before anything is decoded (see the module doc): ``auto`` is
    ``stream`` when the decoded training images (``nbytes``) would take over half the machine's available
    memory, else ``host`` when on CUDA they would take half the device's free memory or more, else ``device``."""
    if residency != "auto":
        return residency
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if nbytes > 0.5 * available:
        return "stream"
    if device.type == "cuda" and nbytes >= 0.5 * torch.cuda.mem_get_info(device)[0]:
        return "host"
    return "device"


def make_source(images: Tensor | EncodedImages, residency: Residency, device: torch.device, cache_dir: Path,
                rows: Tensor | None = None) -> BatchSource:
    """A batch source for uint8 ``images`` (N, C, H, W) on the host where ``residency`` (resolved by
    :func:`resolve`) puts them; with ``rows`` (the stored row of each canonical index) it serves the images in
    canonical order."""
    source = _source(images, residency, device, cache_dir)
    return source if rows is None else CanonicalOrder(source, rows)


def _source(images: Tensor | EncodedImages, mode: Residency, device: torch.device, cache_dir: Path) -> BatchSource:
    if isinstance(images, EncodedImages):
        return EncodedSource(images, device)
    if mode == "encoded":
        raise DataError("data.residency encoded keeps an image folder's encoded files; these images were decoded"
                        " from another source: use auto, device, host or stream")
    if mode == "device":
        return DeviceSource(images, device)
    if mode == "host":
        return HostSource(images, device)
    return StreamSource(mapped_file(images) or memmap_file(images, cache_dir), device)
