"""Chunks this disk already holds, copied into a partial file without re-hashing them.

An edit in place travels as a new version whose chunks are mostly those of the old one, which
is on this disk (the PDF annotated elsewhere is here in its last version). Reading each such
chunk into Python, hashing it against its name and writing it out cost most of a receiver's
time for a 100 KiB append to 20 files of 5 MB (120 MB copied and hashed for 2.6 MB fetched).

Here the chunks of a file whose size and mtime are still those recorded when its chunks were
indexed (store/chunk_index.py) are copied by the kernel (os.copy_file_range on Linux: no copy
through Python, a reflink where the file system shares blocks; through a buffer elsewhere), in
one call per run of neighbouring chunks, and their recorded names are trusted. Nothing is
trusted blindly:

- a file that changed since its record (size or mtime) is not used here: its chunks go the
  verified way (net/chunks.copy_located hashes each one) or are fetched;
- a file that changed while being copied (size, mtime, ctime or inode differ between before and
  after) is not trusted either: what was copied from it is copied again, verified;
- the whole file is still hashed against the signed manifest before it is put in place
  (transfers.seal_partial), and a file that fails that check after a trusted copy is built
  again with every chunk verified (net/chunks.fetch_attachments), never blamed on the manifest.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from typing import Any

from p2psync.store.chunk_index import Location


def identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is the same one, unchanged: size, mtime, ctime and inode."""
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def copy_trusted(
    partial: str, starts: Sequence[int], batch: Sequence[int], locations: Sequence[Location | None]
) -> tuple[list[int], list[int]]:
    """Copy into the partial file the chunks of `batch` (indexes into `starts`, where each
    begins in the new file) that chunk_index.locate found on this disk, from files unchanged
    since their chunks were indexed. Returns (copied, left): the indexes copied, and those found
    but not copied (their file changed, before or during the copy: to copy verified or fetch)."""
    by_file: dict[str, list[tuple[int, Location]]] = {}
    for index, location in zip(batch, locations, strict=True):
        if location is not None:
            by_file.setdefault(location.path, []).append((index, location))
    copied: list[int] = []
    left: list[int] = []
    if not by_file:
        return copied, left
    out = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for path, found in by_file.items():
            if _copy_from(out, path, starts, found):
                copied += [index for index, _ in found]
            else:
                left += [index for index, _ in found]
        if copied:
            _start_writeback(out)
    finally:
        os.close(out)
    return copied, left


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the copied bytes to disk now, without waiting (Linux's
    sync_file_range): the file's fsync before it lands then finds most of them written, while the
    rest of the file was being fetched."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, 2)  # (SYNC_FILE_RANGE_WRITE; a hint: an error changes nothing)


def _sync_file_range() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # (not Linux)
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def _copy_from(out: int, path: str, starts: Sequence[int], found: list[tuple[int, Location]]) -> bool:
    """Copy the chunks `found` in one file; False (nothing to trust) if the file is not the one
    indexed or changed meanwhile."""
    try:
        source = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        before = os.fstat(source)
        if any((before.st_size, before.st_mtime_ns) != (loc.file_size, loc.mtime_ns) for _, loc in found):
            return False  # edited since its chunks were indexed (a scan will record it)
        for src, dst, length in _runs(starts, found):
            while length > 0:
                done = _copy_range(source, out, length, src, dst)
                if done <= 0:
                    return False  # (shorter than recorded: cut meanwhile)
                src, dst, length = src + done, dst + done, length - done
        return identity(os.fstat(source)) == identity(before)
    except OSError:
        return False  # (the verified copy does it)
    finally:
        os.close(source)


COPY_BLOCK = 1 << 20  # bytes moved at a time where the kernel cannot copy between files


def _copy_range(source: int, out: int, length: int, src: int, dst: int) -> int:
    """Copy up to `length` bytes from `source` at `src` to `out` at `dst`; how many were copied
    (0 at the end of the source). The kernel copies them where it can (Linux); elsewhere, or
    between two file systems, they pass through a buffer."""
    if _KERNEL_COPY:
        try:
            return os.copy_file_range(source, out, length, src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
    data = os.pread(source, min(length, COPY_BLOCK), src)
    return os.pwrite(out, data, dst) if data else 0


_KERNEL_COPY = hasattr(os, "copy_file_range")  # (Linux only; macOS and Windows copy through a buffer)


def _runs(starts: Sequence[int], found: list[tuple[int, Location]]) -> list[tuple[int, int, int]]:
    """(source offset, target offset, length) for each stretch of chunks that follow each other
    both in the source file and in the new one."""
    runs: list[tuple[int, int, int]] = []
    for index, location in sorted(found, key=lambda item: starts[item[0]]):
        if runs:
            src, dst, length = runs[-1]
            if src + length == location.offset and dst + length == starts[index]:
                runs[-1] = (src, dst, length + location.size)
                continue
        runs.append((location.offset, starts[index], location.size))
    return runs
