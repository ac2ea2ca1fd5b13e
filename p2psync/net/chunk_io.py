"""Chunk bytes between the disk and the wire (protocol/attachments.md section 4).

The answer to /chunks is, for each chunk asked for in order, a 4-byte big-endian length and the
chunk's bytes (length 0: not here). The sender frames a batch of chunks straight from the files
into one buffer (one read per run of neighbouring chunks, no copy per chunk). The receiver hands
what arrives, about a megabyte at a time, to a thread that cuts it into chunks, verifies each
against its name in the signed manifest, writes the good ones and feeds the whole-file hash with
the bytes it already holds: TLS is decrypted on the event loop meanwhile (hashlib and os.pwrite
let go of the GIL), so both cores work, and no byte is read back from disk to check the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from p2psync.errors import ProtocolMismatch
from p2psync.model.chunking import MAX_SIZE
from p2psync.store import transfers
from p2psync.store.transfers import Missing, Need

LENGTH = struct.Struct(">I")
_MAX_IOV = 512  # buffers given to one preadv (Linux allows 1024)


# --- the sender ---------------------------------------------------------------------------------


def frame_chunks(locations: list[transfers.Location | None]) -> bytearray:
    """The wire form of a batch of chunks: each one's length and bytes, or length 0 where the
    chunk is not here or its file changed since it was indexed (as transfers.read_chunks)."""
    out = bytearray(framed_size(locations))
    end = frame_into(out, 0, locations)
    if end is None:
        return _framed_slowly(locations)
    del out[end:]  # the room kept for chunks that were not here
    return out


def framed_size(locations: list[transfers.Location | None]) -> int:
    """The most bytes frame_into may write for these chunks."""
    return sum(4 + (loc.size if loc is not None else 0) for loc in locations)


def frame_into(out: bytearray, at: int, locations: list[transfers.Location | None]) -> int | None:
    """Write the wire form of a batch into `out` from offset `at` (room for framed_size bytes),
    one preadv per run of neighbouring chunks; returns where it ends, or None if a file turned
    out shorter than indexed while being read (frame_chunks then goes chunk by chunk)."""
    view = memoryview(out)
    fd, path, seen = -1, "", (-1, -1)  # the open file, and its (size, mtime) when opened
    run: list[memoryview] = []  # slices of `out` to fill from one stretch of the open file
    run_start = run_end = 0
    try:
        for location in locations:
            if location is not None and location.path != path:
                if run and not _read_run(fd, run, run_start):
                    return None
                run = []
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                path = location.path
                fd, seen = transfers.open_indexed(path)
            if location is None or fd < 0 or seen != (location.file_size, location.mtime_ns):
                LENGTH.pack_into(out, at, 0)
                at += 4
                continue
            LENGTH.pack_into(out, at, location.size)
            at += 4
            if run and (location.offset != run_end or len(run) >= _MAX_IOV):
                if not _read_run(fd, run, run_start):
                    return None
                run = []
            if not run:
                run_start = run_end = location.offset
            run.append(view[at : at + location.size])
            run_end += location.size
            at += location.size
        if run and not _read_run(fd, run, run_start):
            return None
    finally:
        if fd >= 0:
            os.close(fd)
        for piece in run:
            piece.release()
        view.release()  # (a bytearray cannot change size while a view of it is held)
    return at


def _read_run(fd: int, buffers: list[memoryview], offset: int) -> bool:
    """Fill the buffers from one stretch of the file; False if it was shorter (cut meanwhile)."""
    want = sum(len(b) for b in buffers)
    return os.preadv(fd, buffers, offset) == want


def _framed_slowly(locations: list[transfers.Location | None]) -> bytearray:
    """A file shrank while being read: chunk by chunk, each one whole or said to be missing."""
    out = bytearray()
    for data in transfers.read_chunks(locations):
        out += LENGTH.pack(len(data)) if data else LENGTH.pack(0)
        if data:
            out += data
    return out


# --- the receiver -------------------------------------------------------------------------------


@dataclass
class PartialFile:
    """One version being assembled in its partial file (store/transfers.py): what is still to
    fetch, and what went wrong; shared by the LAN fetch here and the relay's (relay/attachments.py).
    `digest` has seen the file's first `hashed` bytes, as they were verified and written, so the
    whole-file check (transfers.seal_partial) reads back from disk only what came out of order."""

    need: Need
    starts: list[int]
    remaining: set[int]
    refused_at: dict[int, set[str]] = field(default_factory=dict)  # chunk index -> peers whose copy failed
    failed: Missing | None = None  # why, once given up
    finished: bool = False
    digest: Any = field(default_factory=hashlib.sha256)
    hashed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def written(self, index: int, data: bytes | memoryview) -> None:
        """A verified chunk is in the partial file: it extends the hashed part if it follows it."""
        with self.lock:
            if self.starts[index] == self.hashed:
                self.digest.update(data)
                self.hashed += len(data)


def verify_and_write(file: PartialFile, items: list[tuple[int, Any]]) -> tuple[list[int], list[int]]:
    """Write the chunks whose bytes match their names; return (good, bad) indexes."""
    good, bad = [], []
    fd = os.open(file.need.partial, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for index, data in items:
            if hashlib.sha256(data).hexdigest() == file.need.chunks[index][0]:
                os.pwrite(fd, data, file.starts[index])
                file.written(index, data)
                good.append(index)
            else:
                bad.append(index)
    finally:
        os.close(fd)
    return good, bad


@dataclass
class Parsed:
    """What one batch of an answer brought: chunks written, refused (bad bytes or the wrong
    length) and said to be missing by the sender."""

    good: list[int]
    bad: list[int]
    lacking: list[int]


class ChunkStream:
    """One /chunks answer being read: feed() takes the bytes in the order they arrive and writes
    the chunks that verify. Runs off the event loop, one feed at a time."""

    def __init__(self, file: PartialFile, indexes: list[int], device: str) -> None:
        self.file = file
        self.indexes = indexes
        self.device = device
        self.next = 0  # position in indexes of the chunk whose length comes next

    @property
    def complete(self) -> bool:
        return self.next == len(self.indexes)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[Parsed, int]:
        """Parse and write the whole chunks at the start of `data`; (what they were, how many bytes
        they took: the rest, a chunk not yet whole, comes again in front of the next bytes)."""
        view = memoryview(data)
        pos, end = 0, len(view)
        items: list[tuple[int, memoryview]] = []
        wrong: list[int] = []
        lacking: list[int] = []
        error: ProtocolMismatch | None = None
        chunks = self.file.need.chunks
        while self.next < len(self.indexes) and end - pos >= 4:
            index = self.indexes[self.next]
            (length,) = LENGTH.unpack_from(view, pos)
            if length == 0:
                lacking.append(index)
            elif length > MAX_SIZE:  # no chunk is that long: the stream cannot be trusted further
                error = ProtocolMismatch(f"The device {self.device[:7]} sent a chunk longer than any chunk can be.")
                break
            elif end - pos - 4 < length:
                break  # the rest of this chunk comes with the next bytes
            elif length != chunks[index][1]:  # the wrong bytes, like a failed hash
                wrong.append(index)
            else:
                items.append((index, view[pos + 4 : pos + 4 + length]))
            pos += 4 + length
            self.next += 1
        good, bad = verify_and_write(self.file, items) if items else ([], [])
        items.clear()
        if error is not None:
            raise error
        return Parsed(good, bad + wrong, lacking), pos
