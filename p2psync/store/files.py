"""Files that land whole: temporary file in the same folder, fsync, rename, fsync the folder.

A process killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from p2psync.errors import FileProblem

CHUNK = 1 << 20


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


def copy_atomic(source: Path, target: Path, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Copy source to target whole; return (size, sha256) of what was written."""
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as reader, atomic_writer(target) as writer:
            while block := reader.read(CHUNK):
                writer.write(block)
                digest.update(block)
                size += len(block)
                if progress:
                    progress(len(block))
    except FileNotFoundError:
        raise FileProblem(f"The file {source} does not exist.") from None
    except IsADirectoryError:
        raise FileProblem(f"{source} is a folder, not a file.") from None
    except PermissionError as exc:
        raise FileProblem(f"Permission denied for {exc.filename}; check the file's permissions.") from None
    return size, digest.hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as reader:
        while block := reader.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
