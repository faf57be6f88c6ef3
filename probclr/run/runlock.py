"""One writer per run directory, and readers that see one consistent checkpoint.

- ``RunLock``: an advisory exclusive lock (``fcntl.flock`` on ``RUN/.lock``) held by ``pretrain`` for its
  whole life; a second writer is refused in one line naming the holder. The kernel drops the lock when its
  process dies (SIGKILL included), so a crashed run never blocks its own ``--resume``.
- ``stable_checkpoint``: a hard link to the checkpoint's current file. The writer replaces ``last.pt`` by an
  atomic rename, which cannot change the linked inode, so a reader (evaluate, embed, analyze) takes weights,
  config, epoch and hash from one and the same checkpoint.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from probclr.errors import ProbclrError
from probclr.io import owner_tag, remove_leftovers


class RunLock:
    """One writer per run directory: an exclusive flock on RUN/.lock, refused naming the holder's pid."""
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self  # nothing can be written here anyway: the first write says why, naming the file
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise ProbclrError(f"run directory {str(self.root)!r} is in use by {holder}; wait for it to finish or"
                               " use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"probclr pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.fd is None:
            return
        os.close(self.fd)  # releases the lock
        self.fd = None
        lock = self.root / ".lock"
        if self.created and [p.name for p in self.root.iterdir()] == [".lock"]:  # failed before writing anything
            lock.unlink(missing_ok=True)
            self.root.rmdir()


@contextmanager
def stable_checkpoint(path: Path) -> Iterator[Path]:
    """A path whose contents stay those of ``path`` now, whatever a concurrent writer does (see module doc)."""
    remove_leftovers(path.parent, ".read-")  # links of readers that were killed
    link = path.with_name(f".read-{owner_tag()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        os.link(path, link)
    except OSError:  # read-only or link-less file system: read in place
        yield path
        return
    try:
        yield link
    finally:
        link.unlink(missing_ok=True)
