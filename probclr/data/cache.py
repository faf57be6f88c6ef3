"""The on-disk cache of decoded splits: keyed by the source files' names, sizes and times and the image
size, so later runs start in about a second. An entry records its key and the sha256 of its contents,
checked on every read: a damaged entry, another source's entry under this key, or one whose images were
changed since (zeroed, poisoned) is rebuilt, never trusted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from probclr.config import DataConfig
from probclr.data.splits import ImageSet, Splits
from probclr.io import OutputError, atomic_torch_save, safe_torch_load

_CACHE_VERSION = "3"


# --------------------------------------------------------------------------------------------------
# cache


def cache_dir(cfg: DataConfig) -> Path:
    """Where decoded datasets are cached: data.cache_dir, $PROBCLR_CACHE_DIR, or ~/.cache/probclr."""
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


def content_sha256(part: ImageSet) -> str:
    """sha256 of a decoded set's pixels, labels and class names (what the entry promises to give back)."""
    h = hashlib.sha256(f"{tuple(part.images.shape)}{list(part.classes)}".encode())
    h.update(np.ascontiguousarray(part.images.numpy()))  # type: ignore[union-attr]
    h.update(np.ascontiguousarray(part.labels.numpy()))
    return h.hexdigest()


def _pack(s: Splits, key: str) -> dict[str, object]:
    out: dict[str, object] = {"pretrain_is_train": s.pretrain is s.train, "key": key}  # pretrain stored once
    for name, part in s._asdict().items():
        if part is None or (name == "pretrain" and s.pretrain is s.train):
            continue
        out[f"{name}.images"], out[f"{name}.labels"] = part.images, part.labels
        out[f"{name}.classes"] = list(part.classes)
        out[f"{name}.sha256"] = content_sha256(part)
    return out


def _unpack(d: dict[str, object], key: str) -> Splits:
    """The entry's splits; a ValueError when it is another entry's or its contents changed since written."""
    if d.get("key") != key:
        raise ValueError("the entry was written for another source")
    parts = {}
    for name in ("train", "test", "pretrain"):
        if name == "pretrain" and d["pretrain_is_train"]:
            parts[name] = parts["train"]
            continue
        parts[name] = ImageSet(d[f"{name}.images"], d[f"{name}.labels"], tuple(d[f"{name}.classes"]))  # type: ignore[arg-type]
        if content_sha256(parts[name]) != d.get(f"{name}.sha256"):
            raise ValueError(f"the entry's {name} images changed since they were written")
    return Splits(**parts)


class DecodedCache:
    """One entry of the cache: a source's decoded splits, keyed by the source's name, its files (names,
    sizes, times) and the image size. The caller looks up, and on a miss reads the source and puts it."""

    def __init__(self, cfg: DataConfig, name: str, root: Path) -> None:
        self.key = _fingerprint([name, str(root.resolve()), str(cfg.image_size)], root)
        self.path = cache_dir(cfg) / f"{name}-{self.key}.pt"

    def get(self) -> Splits | None:
        """The cached splits, or None on a miss (a damaged entry is deleted, never trusted)."""
        if not self.path.exists():
            return None
        try:
            return _unpack(safe_torch_load(self.path, "cache entry"), self.key)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            self.path.unlink(missing_ok=True)
            return None

    def put(self, splits: Splits) -> Splits:
        """Store freshly decoded splits (an unwritable cache folder only costs the next run a re-decode)."""
        try:
            atomic_torch_save(self.path, _pack(splits, self.key))
        except OutputError:
            pass
        return splits
