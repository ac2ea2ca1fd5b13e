"""The store's file helpers: copying and hashing attachments whole, removing folders.

The whole-file and owner-only writes themselves live one layer down, in p2psync/files.py, since
crypto/ and net/ use them too; they are re-exported here for the store's modules.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from p2psync.errors import FileProblem
from p2psync.files import atomic_writer, create_private, fsync_dir, keep_private, write_atomic

__all__ = [
    "CHUNK",
    "atomic_writer",
    "copy_atomic",
    "create_private",
    "fsync_dir",
    "hash_file",
    "keep_private",
    "remove_tree",
    "write_atomic",
]

CHUNK = 1 << 20


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
