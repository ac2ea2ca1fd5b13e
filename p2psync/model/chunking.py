"""Content-defined chunking of attachment files (protocol/attachments.md section 2).

A file is cut where its content says (FastCDC 2020), not at fixed offsets, so an edit or an
append moves only the chunks around it: the rest keep their boundaries and their names. Each
chunk is named by its SHA-256. The parameters are part of the protocol: two devices must cut the
same bytes the same way, or a chunk one has would never be found under the name the other asks for.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from p2psync.errors import InvalidValue

if TYPE_CHECKING:
    from pyfastcdc import FastCDC

AVG_SIZE = 32 * 1024  # FastCDC's "avg_size"; chunks come out about AVG_SIZE + MIN_SIZE long
MIN_SIZE = 8 * 1024
MAX_SIZE = 128 * 1024
NORMALIZATION: Literal[1] = 1  # FastCDC's normalized-chunking level (the paper's NC)
SEED = 0  # the reference gear table
# One manifest must fit in one operation (engine/ops.py MAX_OP_BYTES, 3 MiB): a chunk costs about
# 80 bytes there, so this is a file of about 1.5 GB at the average chunk size.
MAX_CHUNKS = 36_000


@functools.cache
def _chunker() -> FastCDC:
    """Made on first use: pyfastcdc costs 10 ms to import, and most commands cut no file."""
    from pyfastcdc import FastCDC

    return FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, normalized_chunking=NORMALIZATION, seed=SEED)


def chunk_bytes(data: bytes) -> list[list[Any]]:
    """The chunk list [[sha256, size], ...] of a buffer (vectors and tests)."""
    return [[hashlib.sha256(c.data).hexdigest(), c.length] for c in _chunker().cut_buf(data)]


def manifest_of(path: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Size, SHA-256 and chunk list of a file, read once as a stream (memory stays flat)."""
    whole = hashlib.sha256()
    chunks: list[list[Any]] = []
    size = 0
    with open(path, "rb", buffering=0) as stream:
        for chunk in _chunker().cut_stream(stream):
            whole.update(chunk.data)
            chunks.append([hashlib.sha256(chunk.data).hexdigest(), chunk.length])
            size += chunk.length
            if progress is not None:
                progress(chunk.length)
            if len(chunks) > MAX_CHUNKS:  # stop reading: the manifest could not travel
                total = os.fstat(stream.fileno()).st_size
                raise InvalidValue(
                    f"{Path(path).name} is {total / 1e9:.1f} GB; p2psync syncs attachments of up to about 1.5 GB."
                )
    return {"size": size, "sha256": whole.hexdigest(), "chunks": chunks}


def offsets(chunks: list[list[Any]]) -> list[int]:
    """Where each chunk of a chunk list starts in its file."""
    out, at = [], 0
    for _digest, length in chunks:
        out.append(at)
        at += length
    return out
