"""The library, used from asyncio code: one thread owns the SQLite connection and runs every
database call, so the event loop never blocks on the disk and the connection never changes
threads (sqlite3 forbids that)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from p2psync.net import frames
from p2psync.net.protocol import BATCH_BYTES
from p2psync.store import bulk as store_bulk
from p2psync.store.library import KEY_FILE, Library
from p2psync.store.prepare import Preparer
from p2psync.store.sync import PARALLEL_AFTER_BYTES, ReceiveReport, receive

T = TypeVar("T")


class LibraryWorker:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2psync-library")
        self._library: Library | None = None

    def _open(self) -> Library:
        if self._library is None:
            self._library = Library.open(self.path)
        return self._library

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run function(library, *args) on the library's thread."""
        loop = asyncio.get_running_loop()

        def run() -> T:
            try:
                return function(self._open(), *args)
            except StopIteration as exc:
                # A future cannot carry StopIteration: asyncio would leave the caller waiting for
                # ever (a page that never answers). As a RuntimeError it fails like any bug.
                raise RuntimeError(f"{function!r} raised StopIteration") from exc

        return await loop.run_in_executor(self._pool, run)

    async def next_batch(self, items: Iterator[T], count: int) -> list[T]:
        """Up to `count` more items of an iterator made on the library's thread."""

        def take(_library: Library) -> list[T]:
            out: list[T] = []
            for item in items:
                out.append(item)
                if len(out) >= count:
                    break
            return out

        return await self.call(take)

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    async def close(self) -> None:
        def close(library: Library) -> None:
            library.close()

        if self._library is not None:
            await self.call(close)
            self._library = None
        self._pool.shutdown(wait=True)


async def receive_stream(
    worker: LibraryWorker, chunks: AsyncIterable[bytes], peer: str, total: ReceiveReport, bulk: bool = False
) -> bool:
    """Apply a framed change-set stream as it arrives, in batches of about BATCH_BYTES, adding
    to `total`. Whatever arrived whole is applied even if the stream breaks or turns out bad
    (the exception then propagates). Returns whether the stream ended with its end mark.
    bulk: the stream brings far more than the library holds (store/bulk.py): the random-order
    sort indexes are dropped for it and built again at its end."""
    deferred = await worker.call(store_bulk.defer_indexes) if bulk else None
    try:
        return await _receive_stream(worker, chunks, peer, total)
    finally:
        if deferred is not None:
            await worker.call(store_bulk.build_indexes, deferred)


async def _receive_stream(worker: LibraryWorker, chunks: AsyncIterable[bytes], peer: str, total: ReceiveReport) -> bool:
    """While one batch is applied on the library's thread, the next is read from the network;
    past PARALLEL_AFTER_BYTES, one child process (store/prepare.py) parses every later batch, so
    that a large receive uses two cores."""
    reader = frames.FrameReader()
    batch: list[bytes] = []
    size = received = 0
    applying: asyncio.Future[None] | None = None
    preparer: Preparer | None = None

    async def apply(wires: list[bytes]) -> None:
        total.add(await worker.call(receive, wires, peer, False, preparer))

    try:
        async for chunk in chunks:
            for wire in reader.feed(chunk):
                batch.append(wire)
                size += len(wire)
                if size >= BATCH_BYTES:
                    received += size
                    if preparer is None and received > PARALLEL_AFTER_BYTES:
                        preparer = await worker.call(_start_preparer)
                    if applying is not None:
                        await applying  # one batch applied at a time, in order
                    applying = asyncio.ensure_future(apply(batch))
                    batch, size = [], 0
    finally:
        try:
            if applying is not None:
                await applying
            if batch:
                await apply(batch)
        finally:
            if preparer is not None:
                await asyncio.get_running_loop().run_in_executor(None, preparer.close)
    return reader.ended


def _start_preparer(library: Library) -> Preparer | None:
    try:
        return Preparer(library.library_id)
    except OSError:  # no interpreter to start (an embedded Python): parsed here
        return None
