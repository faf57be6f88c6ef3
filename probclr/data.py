"""Datasets decoded once into uint8 tensors, cached on disk, so later runs start in about a second.

Sources: ``digits`` (scikit-learn's 8x8 digits, shipped inside its wheel: the no-download default),
``cifar10`` (torchvision's ``cifar-10-batches-py`` or an ImageFolder ``train/<class>``, ``test/<class>``),
``stl10`` (torchvision) and ``imagefolder`` (class subfolders, or one flat folder of unlabeled images).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from probclr.config import DataConfig
from probclr.errors import DataError
from probclr.io import OutputError, atomic_torch_save

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_CACHE_VERSION = "2"


class ImageSet(NamedTuple):
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64; -1 where unlabeled
    classes: tuple[str, ...]


class Splits(NamedTuple):
    pretrain: ImageSet  # what self-supervised pretraining sees (labels unused)
    train: ImageSet  # the labeled training set that label fractions are drawn from
    test: ImageSet  # held-out evaluation set, never used for fitting or model selection
    # labeled images held out of the label pool for every choice (probclr.validation); None before carving
    val: ImageSet | None = None


# --------------------------------------------------------------------------------------------------
# decoding


MAX_PIXELS = 40_000_000  # larger images (a decompression bomb, a mistake) are refused before decoding
MAX_ASPECT = 20  # a 1 x 1,000,000 strip would become an enormous image when its short side is resized


def _check_size(path: Path, wh: tuple[int, int], size: int | None) -> None:
    w, h = wh
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise DataError(f"image {str(path)!r} is {w}x{h} pixels; probclr reads images of at most {MAX_PIXELS:,} pixels")
    if size is not None and max(w, h) > MAX_ASPECT * min(w, h):
        raise DataError(f"image {str(path)!r} is {w}x{h}: an aspect ratio above {MAX_ASPECT}:1 cannot be resized to"
                        f" {size}x{size} by its shorter side")


def _decode(path: Path, size: int | None) -> np.ndarray:
    """One image file -> (H, W, 3) uint8, converting grey, palette, RGBA and 16-bit modes to RGB."""
    try:
        with Image.open(path) as im:
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
    """Decode files in parallel threads -> (N, 3, H, W) uint8; all must share one size unless ``size``."""
    if not paths:
        raise DataError("no image files to decode")
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: _decode(p, size), paths, chunksize=256))
    first = arrays[0].shape
    for p, a in zip(paths, arrays, strict=True):
        if a.shape != first:
            raise DataError(
                f"image {str(p)!r} is {a.shape[1]}x{a.shape[0]} but {str(paths[0])!r} is {first[1]}x{first[0]};"
                " set data.image_size to resize all images"
            )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


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


def read_image_folder(root: Path, size: int | None) -> ImageSet:
    """Class subfolders (``root/<class>/*``) or a flat folder of unlabeled images."""
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = [f for f in root.iterdir() if f.is_file() and not f.name.startswith(".")]
    if subdirs and loose:
        raise DataError(
            f"{str(root)!r} mixes class folders and loose files ({loose[0].name!r});"
            " use either class subfolders or one flat folder"
        )
    if subdirs:
        paths, labels = [], []
        for k, d in enumerate(subdirs):
            files = _listing(d)
            if not files:
                raise DataError(f"class folder {str(d)!r} holds no images")
            paths += files
            labels += [k] * len(files)
        classes = tuple(d.name for d in subdirs)
    else:
        paths = _listing(root)
        if not paths:
            raise DataError(f"image folder {str(root)!r} holds no images")
        labels, classes = [-1] * len(paths), ()
    return ImageSet(decode_files(paths, size), torch.tensor(labels, dtype=torch.int64), classes)


# --------------------------------------------------------------------------------------------------
# cache


def cache_dir(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("PROBCLR_CACHE_DIR") or Path.home() / ".cache" / "probclr"
    return Path(root)


def _fingerprint(parts: list[str], root: Path) -> str:
    h = hashlib.sha1()
    for part in [_CACHE_VERSION, *parts]:
        h.update(part.encode("utf-8", "surrogateescape"))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def _pack(s: Splits) -> dict[str, object]:
    out: dict[str, object] = {"pretrain_is_train": s.pretrain is s.train}  # stored once, not twice
    for name, part in s._asdict().items():
        if part is None or (name == "pretrain" and s.pretrain is s.train):
            continue
        out[f"{name}.images"], out[f"{name}.labels"] = part.images, part.labels
        out[f"{name}.classes"] = list(part.classes)
    return out


def _unpack(d: dict[str, object]) -> Splits:
    parts = {}
    for name in ("train", "test", "pretrain"):
        if name == "pretrain" and d["pretrain_is_train"]:
            parts[name] = parts["train"]
            continue
        parts[name] = ImageSet(d[f"{name}.images"], d[f"{name}.labels"], tuple(d[f"{name}.classes"]))  # type: ignore[arg-type]
    return Splits(**parts)


def cached(cfg: DataConfig, name: str, root: Path, build: Callable[[], Splits]) -> Splits:
    """Return the decoded splits of ``root``, from the cache when the source files are unchanged."""
    key = _fingerprint([name, str(root.resolve()), str(cfg.image_size)], root)
    path = cache_dir(cfg) / f"{name}-{key}.pt"
    if path.exists():
        try:
            return _unpack(torch.load(path, weights_only=True))
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    splits: Splits = build()
    try:
        atomic_torch_save(path, _pack(splits))
    except OutputError:
        pass  # an unwritable cache dir only costs the next run a re-decode
    return splits
