"""Serving attachment chunks (protocol/attachments.md section 4.1): the /chunks endpoint of the main
server, and the request checks and batching shared with the threaded listener (net/chunk_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
from typing import Any

from aiohttp import web

from p2psync.engine.canonical import encode
from p2psync.net.chunk_io import frame_chunks
from p2psync.net.worker import LibraryWorker
from p2psync.store import transfers

MAX_CHUNKS_PER_REQUEST = 512
SEND_BATCH = 2 * 1024 * 1024  # chunks are read from disk and sent in batches of about this
log = logging.getLogger("p2psync.server")


async def serve_chunks(request: web.Request, worker: LibraryWorker, body: Any) -> web.StreamResponse:
    """Answer a list of chunk names with, for each in order, its length and bytes (length 0:
    not here). Files are read off the event loop, about SEND_BATCH at a time (net/chunk_io.py)."""
    wanted = chunk_names(body)
    if wanted is None:
        raise web.HTTPBadRequest(
            text=encode({"error": "malformed", "message": MALFORMED}).decode(), content_type="application/json"
        )
    _keep_freed_memory()
    locations = await worker.call(transfers.locate, wanted)
    response = web.StreamResponse(headers={"Content-Type": "application/x-p2psync-chunks"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    batches = cut_batches(locations)
    sent = 0
    # The next batch is read from disk while this one is encrypted and sent.
    ahead = loop.run_in_executor(None, frame_chunks, batches[0]) if batches else None
    try:
        for i in range(len(batches)):
            assert ahead is not None
            data = await ahead
            ahead = loop.run_in_executor(None, frame_chunks, batches[i + 1]) if i + 1 < len(batches) else None
            await response.write(data)
            sent += len(batches[i])
        await response.write_eof()
    except ConnectionError:  # (reset, or aiohttp's "Connection lost" while waiting to send more)
        # The fetcher went away (it stopped, or takes these chunks from another peer): not a fault
        # of this device, so no traceback; aiohttp drops the rest of the answer quietly.
        log.debug("a peer left while being sent chunks (%d of %d sent)", sent, len(locations))
    finally:
        if ahead is not None:
            ahead.cancel()  # (the batch read ahead is not wanted any more)
    return response


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc keep (up to 32 MiB of) freed memory instead of handing each freed batch back to
    the kernel and faulting it in again for the next one: profiled, those page faults and
    zeroings were an eighth of the sender's CPU. Once per process, at the first chunks it serves;
    nothing where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 8 * 1024 * 1024)  # M_MMAP_THRESHOLD: batches come from the heap, not mmap
        libc.mallopt(-1, 32 * 1024 * 1024)  # M_TRIM_THRESHOLD: free memory kept before trimming


def cut_batches(
    locations: list[transfers.Location | None], batch: int = SEND_BATCH
) -> list[list[transfers.Location | None]]:
    """The chunks cut into runs of about `batch` bytes (at least one chunk each)."""
    out: list[list[transfers.Location | None]] = []
    current: list[transfers.Location | None] = []
    size = 0
    for location in locations:
        current.append(location)
        size += location.size if location is not None else 0
        if size >= batch:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out


MALFORMED = f"Ask for 1 to {MAX_CHUNKS_PER_REQUEST} chunks by SHA-256 (hex)."


def chunk_names(body: Any) -> list[str] | None:
    """The chunk names a request body asks for (attachments.md 4.1); None if it is not such a body."""
    wanted = body.get("chunks") if isinstance(body, dict) else None
    if (
        not isinstance(wanted, list)
        or not 1 <= len(wanted) <= MAX_CHUNKS_PER_REQUEST
        or not all(isinstance(c, str) and len(c) == 64 and _is_hex(c) for c in wanted)
    ):
        return None
    return wanted


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
