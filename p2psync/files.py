"""Files that land whole, and files only their owner may read. The lowest layer: the device key
(crypto/), TLS certificates (net/), exports (cli/) and the store all write through it, so it
imports nothing of p2psync but errors.

A whole file: temporary file in the same folder, fsync, rename, fsync the folder. A process killed
at any moment leaves either the old file or the new one, never half of one. A file's mode is set
on its descriptor (fchmod), so the umask neither loosens nor tightens it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces `path` atomically, on error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".p2psync-", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def keep_private(path: Path) -> None:
    """Take every permission of group and others away from `path` (a folder becomes 0700, a
    file 0600), keeping the owner's. Nothing happens to a path that is not there, or one this
    user may not change (the error to act on comes when it is used)."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)


def create_private(path: Path) -> None:
    """Create `path` as an empty file of mode 0600 unless it exists; else keep_private it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        keep_private(path)
        return
    try:
        os.fchmod(fd, 0o600)  # exactly, whatever the umask
    finally:
        os.close(fd)
