"""Where each chunk of the attachment files on this disk is (`chunk_index`, store/schema.py).

The attachment files themselves are the chunk store: a chunk is found by its SHA-256 in
`chunk_index`, which says which whole file holds it and where, so no second copy of anything is
kept. A file's chunks are indexed when it is recorded (attached, edited in place, fetched) and
forgotten when no file here has that content any more. A Location also carries the file's size
and mtime as recorded: a reader checks them before trusting the bytes (store/transfers.py moves
whole files; net/chunk_io.py frames chunks for a peer; store/local_copy.py copies them locally).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from p2psync.store.db import Database
from p2psync.store.folder import version_path


def index_chunks(db: Database, manifest: dict[str, Any]) -> None:
    """Note where the chunks of a file now on disk are (inside a write transaction)."""
    chunks = manifest.get("chunks")
    if not chunks:
        return
    if db.execute("SELECT 1 FROM chunk_index WHERE file = ? LIMIT 1", [manifest["sha256"]]).fetchone():
        return
    rows, at = [], 0
    for digest, size in chunks:
        rows.append((digest, manifest["sha256"], at, size))
        at += size
    db.conn.executemany("INSERT OR IGNORE INTO chunk_index (chunk, file, offset, size) VALUES (?, ?, ?, ?)", rows)


def forget_unused(db: Database, file_sha: str) -> None:
    """Drop a file's chunks from the index once no file on this disk has that content."""
    if not _file_here(db, file_sha):
        db.execute("DELETE FROM chunk_index WHERE file = ?", [file_sha])


def _file_here(db: Database, file_sha: str) -> bool:
    return bool(
        db.execute("SELECT 1 FROM attachment_files WHERE sha256 = ? LIMIT 1", [file_sha]).fetchone()
        or db.execute("SELECT 1 FROM attachment_versions WHERE sha256 = ? LIMIT 1", [file_sha]).fetchone()
    )


@dataclass(frozen=True)
class Location:
    """Where the bytes of one chunk are on this disk, and what the file looked like when indexed."""

    path: str
    offset: int
    size: int
    file_size: int
    mtime_ns: int


def locate(library: Any, chunk_shas: list[str], near: tuple[str, str] | None = None) -> list[Location | None]:
    """For each chunk, a file on this disk that holds it (None if none does). `near`: the
    (ref_id, name) of an attachment whose file here is looked in first, with one query (a new
    version of a file is mostly the chunks of the one it replaces: one query per chunk was most
    of a delta's lookups)."""
    out: list[Location | None] = []
    cache: dict[str, Location | None] = {}
    files: dict[str, tuple[str, int, int] | None] = {}  # file sha -> (path, size, mtime), per call
    conn = library.db.conn
    # One read transaction: outside one, every SELECT takes and drops the WAL read lock itself
    # (profiled: two fcntl calls per chunk, on the sender and on a receiver looking for local copies).
    begun = not conn.in_transaction
    if begun:
        conn.execute("BEGIN")
    try:
        if near is not None:
            cache.update(_in_file_of(library, near, files))
        for chunk in chunk_shas:
            if chunk not in cache:
                cache[chunk] = _locate_one(library, chunk, files)
            out.append(cache[chunk])
    finally:
        if begun:
            conn.execute("COMMIT")
    return out


def _in_file_of(
    library: Any, near: tuple[str, str], files: dict[str, tuple[str, int, int] | None]
) -> dict[str, Location]:
    """chunk -> where it is in the file of attachment `near` (nothing if it has none here)."""
    row = library.db.conn.execute(
        "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", list(near)
    ).fetchone()
    if row is None:
        return {}
    file_sha = row[0]
    files[file_sha] = found = _where_file(library, file_sha)
    if found is None:
        return {}
    out: dict[str, Location] = {}
    for chunk, offset, size in library.db.conn.execute(
        "SELECT chunk, offset, size FROM chunk_index WHERE file = ? ORDER BY offset", [file_sha]
    ):
        out.setdefault(chunk, Location(found[0], offset, size, found[1], found[2]))
    return out


def _locate_one(library: Any, chunk: str, files: dict[str, tuple[str, int, int] | None]) -> Location | None:
    conn = library.db.conn
    for file_sha, offset, size in conn.execute(
        "SELECT file, offset, size FROM chunk_index WHERE chunk = ? LIMIT 4", [chunk]
    ).fetchall():
        if file_sha not in files:
            files[file_sha] = _where_file(library, file_sha)
        found = files[file_sha]
        if found is not None:
            return Location(found[0], offset, size, found[1], found[2])
    return None


def _where_file(library: Any, file_sha: str) -> tuple[str, int, int] | None:
    conn = library.db.conn
    row = conn.execute(
        "SELECT ref_id, name, size, mtime_ns FROM attachment_files WHERE sha256 = ? LIMIT 1", [file_sha]
    ).fetchone()
    if row:
        return str(library.attachment_file(row[0], row[1])), row[2], row[3]
    row = conn.execute(
        "SELECT ref_id, sha256, size, mtime_ns FROM attachment_versions WHERE sha256 = ? LIMIT 1", [file_sha]
    ).fetchone()
    if row:
        return str(version_path(library, row[0], row[1])), row[2], row[3]
    return None


def open_indexed(path: str) -> tuple[int, tuple[int, int]]:
    """An indexed file opened for reading its chunks, and its (size, mtime) as opened, which a
    chunk's Location must match (else the file changed since it was indexed); (-1, (-1, -1))
    when it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return -1, (-1, -1)
    try:
        stat = os.fstat(fd)
    except OSError:
        os.close(fd)
        return -1, (-1, -1)
    return fd, (stat.st_size, stat.st_mtime_ns)


def read_chunks(locations: list[Location | None]) -> list[bytes | None]:
    """Each chunk's bytes, or None if its file is gone or changed since it was indexed (an edit
    in place not yet scanned: its chunks are not what the index says). Each file is opened once
    for a run of chunks from it."""
    out: list[bytes | None] = []
    fd, path, seen = -1, "", (-1, -1)  # the open file, and its (size, mtime) when opened
    try:
        for location in locations:
            if location is None:
                out.append(None)
                continue
            if location.path != path:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                path = location.path
                fd, seen = open_indexed(path)
            if fd < 0 or seen != (location.file_size, location.mtime_ns):
                out.append(None)
                continue
            data = os.pread(fd, location.size, location.offset)
            out.append(data if len(data) == location.size else None)
    finally:
        if fd >= 0:
            os.close(fd)
    return out
