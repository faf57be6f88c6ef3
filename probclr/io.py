"""Atomic file writes: write a temporary file in the same folder, fsync, then rename over the target.

A reader (or a resumed run after a crash) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import glob
import io
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from probclr.errors import ProbclrError


class OutputError(ProbclrError):
    """A file could not be written (a full disk, a read-only folder); the previous file is unchanged."""


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    try:
        _atomic_unchecked(path, write)
    except OSError as err:
        if err.errno is None:
            raise
        hint = {errno.EROFS: "the file system is read-only", errno.EACCES: "no write permission",
                errno.EPERM: "a read-only or immutable folder?",
                errno.ENOSPC: "the disk is full"}.get(err.errno, "")
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise OutputError(
            f"cannot write {str(path)!r}: {err.strerror}{f' ({hint})' if hint else ''}; {kept}"
        ) from err


def _atomic_unchecked(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # A process killed mid-write (SIGKILL, power loss) cannot clean up; its temporary file is removed by the
    # next successful write of the same target (one writer per file: rank 0, one process per run folder).
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path atomically (temp file, fsync, rename): readers see the old or the new file."""
    _atomic(path, lambda fh: fh.write(data) and None)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically (UTF-8; undecodable file-name bytes round-trip)."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))  # non-UTF-8 file names round-trip


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write an object as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save into memory first, then one atomic write: a full disk is an OutputError naming the file
    (torch's own writer reports it as an internal "enforce fail ... unexpected pos")."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (metrics logs); a torn last line is skipped by :func:`read_jsonl`."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (empty if missing); a damaged line is one error naming the file."""
    rows: list[dict[str, Any]] = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Write a command's whole output folder in a staging folder beside ``final``, then swap it in: readers
    see the old outputs or the new ones, never a mix, and a failure leaves the old ones untouched. Staging
    folders left by a process that was killed (SIGKILL, power loss) are removed on the next call."""
    final = Path(final)
    remove_leftovers(final.parent, f".{final.name}.tmp-")
    remove_leftovers(final.parent, f".{final.name}.old-")
    stage = final.with_name(f".{final.name}.tmp-{owner_tag()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{owner_tag()}")
    if final.exists():
        os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def owner_tag() -> str:
    """``<host>-<pid>``: names a temporary file or folder by the process that owns it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leftovers(folder: Path, prefix: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><this host>-<pid>…`` whose process is gone: what a killed
    process left behind. Another host's entries are never touched (their process may be alive there)."""
    mine = f"{prefix}{socket.gethostname()}-"
    removed = []
    for entry in Path(folder).glob(f"{glob.escape(mine)}*") if Path(folder).is_dir() else []:
        pid = entry.name[len(mine):].split("-")[0].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class DamagedFileError(ProbclrError):
    """A file probclr wrote earlier no longer reads as what it wrote (edited, truncated, another tool's)."""


def read_json(path: Path, what: str, expect: type = dict) -> Any:
    """A JSON file probclr wrote, as ``expect``; damage is one line naming the file, never a traceback."""
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{what} {str(path)!r} is damaged ({str(err)[:120]}); delete it or re-run the"
                               " command that wrote it") from err
    if not isinstance(data, expect):
        raise DamagedFileError(f"{what} {str(path)!r} is damaged (a {expect.__name__} expected, got"
                               f" {type(data).__name__}); delete it or re-run the command that wrote it")
    return data


def read_csv(path: Path, what: str, columns: tuple[str, ...] = ()) -> Any:
    """A CSV table probclr wrote (pandas), with the columns it must have; damage is one line."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DamagedFileError(f"{what} {str(path)!r} is damaged ({str(err)[:120]}); re-run the command that"
                               " wrote it") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DamagedFileError(f"{what} {str(path)!r} is damaged (no column {missing[0]!r}); re-run the command"
                               " that wrote it")
    return df


def load_failure_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line — the refused global or the parse error,
    never PyTorch's advice to retry with ``weights_only=False`` (the unsafe path)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "weights_only" not in ln and "Weights only load failed" not in ln
              and not ln.startswith(("Check the documentation", "(1)", "(2)"))]
    return (useful[0] if useful else type(err).__name__)[:200]


def safe_torch_load(path: Path, what: str, remedy: str = "", error: type[ProbclrError] = ProbclrError) -> Any:
    """The one reader of every ``.pt`` file probclr writes: ``torch.load`` with ``weights_only=True`` onto the CPU,
    so that loading never runs code. A file that does not load is ``error``: "refusing to load PATH: not a
    safe WHAT (reason)[; remedy]", one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a refusal, with its reason
        tail = f"; {remedy}" if remedy else ""
        raise error(f"refusing to load {str(path)!r}: not a safe {what} ({load_failure_reason(err)}){tail}") from err
