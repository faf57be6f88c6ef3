"""Decoding image files into uint8 tensors: size limits, parallel decoding, class folders."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from probclr.data.splits import ImageSet
from probclr.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 40_000_000  # larger images (a decompression bomb, a mistake) are refused before decoding
MAX_ASPECT = 20  # a 1 x 1,000,000 strip would become an enormous image when its short side is resized
DECODE_THREADS = min(4, os.cpu_count() or 1)


def _check_size(path: Path, wh: tuple[int, int], size: int | None) -> None:
    w, h = wh
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise DataError(f"image {str(path)!r} is {w}x{h} pixels; probclr reads images of at most {MAX_PIXELS:,} pixels")
    if size is not None and max(w, h) > MAX_ASPECT * min(w, h):
        raise DataError(f"image {str(path)!r} is {w}x{h}: an aspect ratio above {MAX_ASPECT}:1 cannot be resized to"
                        f" {size}x{size} by its shorter side")


def decode_one(path: Path, size: int | None, data: bytes | None = None) -> np.ndarray:
    """One image file (or its bytes ``data``, read earlier; errors still name ``path``) -> (H, W, 3) uint8,
    converting grey, palette, RGBA and 16-bit modes to RGB."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            _check_size(path, im.size, size)  # from the header, before decoding a single pixel
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                im = Image.fromarray((arr / peak * 255).round().clip(0, 255).astype(np.uint8))
            im = im.convert("RGB")
            if size is not None:
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {str(path)!r}: {str(err)[:200]}") from err


def decode_files(paths: list[Path], size: int | None) -> Tensor:
    """Decode files in parallel threads -> (N, 3, H, W) uint8; all must share one size unless ``size``.
    The output is allocated once and filled chunk by chunk (peak memory: the set plus one chunk)."""
    if not paths:
        raise DataError("no image files to decode")
    chunks = decoded_chunks(paths, size)
    start, first = next(chunks)
    out = np.empty((len(paths), *first.shape[1:]), dtype=np.uint8)  # (N, 3, H, W)
    out[: len(first)] = first
    for start, chunk in chunks:
        out[start:start + len(chunk)] = chunk
    return torch.from_numpy(out)


def decoded_chunks(paths: list[Path], size: int | None, chunk: int = 512) -> Iterator[tuple[int, np.ndarray]]:
    """(start, images (c, 3, H, W) uint8) for consecutive chunks of ``paths``, decoded in parallel threads;
    every image must have the first one's size (or is resized to ``size``)."""
    first_shape: tuple[int, ...] | None = None
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            arrays = list(pool.map(lambda p: decode_one(p, size), part))
            first_shape = first_shape or arrays[0].shape
            check_same_size(part, arrays, paths[0], first_shape)
            yield start, np.stack(arrays).transpose(0, 3, 1, 2)  # (c, 3, H, W)


def check_same_size(paths: list[Path], arrays: list[np.ndarray], first_path: Path, first: tuple[int, ...]) -> None:
    """Every decoded (H, W, 3) array has the shape of the first image, or a one-line error names both."""
    for p, a in zip(paths, arrays, strict=True):
        if a.shape != first:
            raise DataError(
                f"image {str(p)!r} is {a.shape[1]}x{a.shape[0]} but {str(first_path)!r} is {first[1]}x{first[0]};"
                " set data.image_size to resize all images"
            )


def _listing(root: Path) -> list[Path]:
    """Every non-hidden file below ``root``, sorted; a file that is not an image is an error naming it."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{str(path)!r} is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})"
                )
            files.append(path)
    return files


def list_image_folder(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files of class subfolders (``root/<class>/*``) or of one flat folder (labels -1), with their
    labels and the class names, without decoding a pixel."""
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = [f for f in root.iterdir() if f.is_file() and not f.name.startswith(".")]
    if subdirs and loose:
        raise DataError(
            f"{str(root)!r} mixes class folders and loose files ({loose[0].name!r});"
            " use either class subfolders or one flat folder"
        )
    if not subdirs:
        paths = _listing(root)
        if not paths:
            raise DataError(f"image folder {str(root)!r} holds no images")
        return paths, [-1] * len(paths), ()
    paths, labels = [], []
    for k, d in enumerate(subdirs):
        files = _listing(d)
        if not files:
            raise DataError(f"class folder {str(d)!r} holds no images")
        paths += files
        labels += [k] * len(files)
    return paths, labels, tuple(d.name for d in subdirs)


def read_image_folder(root: Path, size: int | None) -> ImageSet:
    """Class subfolders (``root/<class>/*``) or a flat folder of unlabeled images, decoded into memory."""
    paths, labels, classes = list_image_folder(root)
    return ImageSet(decode_files(paths, size), torch.tensor(labels, dtype=torch.int64), classes)
