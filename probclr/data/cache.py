"""The on-disk cache of decoded splits: keyed by the source files' names, sizes and times and the image
size, so later runs start in about a second; a damaged cache entry is rebuilt, never trusted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from probclr.config import DataConfig
from probclr.data.splits import ImageSet, Splits
from probclr.io import OutputError, atomic_torch_save, safe_torch_load

_CACHE_VERSION = "2"


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


class DecodedCache:
    """One entry of the cache: a source's decoded splits, keyed by the source's name, its files (names,
    sizes, times) and the image size. The caller looks up, and on a miss reads the source and puts it."""

    def __init__(self, cfg: DataConfig, name: str, root: Path) -> None:
        key = _fingerprint([name, str(root.resolve()), str(cfg.image_size)], root)
        self.path = cache_dir(cfg) / f"{name}-{key}.pt"

    def get(self) -> Splits | None:
        """The cached splits, or None on a miss (a damaged entry is deleted, never trusted)."""
        if not self.path.exists():
            return None
        try:
            return _unpack(safe_torch_load(self.path, "cache entry"))
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            self.path.unlink(missing_ok=True)
            return None

    def put(self, splits: Splits) -> Splits:
        """Store freshly decoded splits (an unwritable cache folder only costs the next run a re-decode)."""
        try:
            atomic_torch_save(self.path, _pack(splits))
        except OutputError:
            pass
        return splits
