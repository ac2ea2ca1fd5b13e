"""Attachment chunks through the relay: fetch the versions this machine lacks, push the chunks
the relay lacks.

`fetch_attachments` goes file by file (a file's followers copied from its first): resumed from a
partial file, copied from files on this disk where possible, the rest fetched CHUNK_BATCH at a
time with CHUNKS_IN_FLIGHT requests open, each chunk decrypted and checked against the manifest
before it is written, the whole file checked before it is put in place (store/transfers.py
finish). `push_chunks` asks the relay which chunks of each local file it has (/chunks/have),
sends the others sealed, and records a file as pushed once all its chunks are there.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from p2psync.errors import DiskFull, RelayQuotaExceeded, RelayTampered
from p2psync.model.chunking import offsets
from p2psync.net.chunks import PartialFile, copy_located, resume_partial, verify_and_write
from p2psync.relay import crypto, keys
from p2psync.relay.client import HAVE_LIMIT, RelayClient
from p2psync.relay.device_client import KeyEpochMoved
from p2psync.relay.library_calls import LibraryCalls
from p2psync.relay.report import RelaySyncReport
from p2psync.store import relay_state, transfers
from p2psync.store.db import is_disk_full
from p2psync.store.transfers import Missing

if TYPE_CHECKING:
    from p2psync.store.library import Library

T = TypeVar("T")

CHUNKS_IN_FLIGHT = 4
CHUNK_BATCH = 64  # chunks fetched before they are verified and written (at most 8 MiB held)


async def push_chunks(lib: LibraryCalls, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    """Put on the relay the chunks of local files it lacks (asked with /chunks/have)."""
    for file_sha in await lib.call(relay_state.files_to_push):
        names = [c for c, _, _ in await lib.call(relay_state.file_chunks, file_sha)]
        ids = [crypto.chunk_id(ring.chunk_key, c) for c in names]
        lacking: list[int] = []
        for start in range(0, len(ids), HAVE_LIMIT):
            have = await client.have(ids[start : start + HAVE_LIMIT])
            lacking += [start + i for i, h in enumerate(have) if not h]
        complete = True
        for start in range(0, len(lacking), CHUNK_BATCH):
            part = lacking[start : start + CHUNK_BATCH]
            locations = await lib.call(transfers.locate, [names[i] for i in part])
            datas = await _off_loop(transfers.read_chunks, locations)
            uploads = []
            for i, data in zip(part, datas, strict=True):
                if data is None or hashlib.sha256(data).hexdigest() != names[i]:
                    complete = False  # changed on disk since indexed: the next scan makes it a new version
                    continue
                uploads.append((ids[i], crypto.encrypt_chunk(ring.current, ids[i], data), len(data)))
            try:
                await _gather_limited([client.put_chunk(cid, blob, ring.epoch) for cid, blob, _ in uploads])
            except RelayQuotaExceeded as exc:
                report.errors.append(exc.message)
                return
            except KeyEpochMoved:  # a new key in force meanwhile: the rest goes up at the next sync
                await keys.refresh(lib, client, ring)
                return
            report.chunks_pushed += len(uploads)
            report.chunk_bytes_pushed += sum(n for _, _, n in uploads)
        if complete:
            await lib.call(relay_state.mark_pushed, file_sha)


async def _gather_limited(coroutines: list[Any]) -> list[Any]:
    limit = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

    async def one(coroutine: Any) -> Any:
        async with limit:
            return await coroutine

    tasks = [asyncio.ensure_future(one(c)) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for coroutine in coroutines:
            coroutine.close()  # those cancelled before they started were never awaited (a warning each)
        raise


async def fetch_attachments(lib: LibraryCalls, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    """Bring every attachment version this machine lacks from the relay, chunk by chunk: resumed
    from a partial file, copied from files on this disk where possible, each chunk decrypted and
    checked against the manifest before it is written, the whole file checked before it is put
    in place (store/transfers.py finish). A full disk is DiskFull (one sentence; a daemon goes
    on), not the operating system's bare error; what arrived whole is kept."""
    try:
        await _fetch_all(lib, client, ring, report)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(await lib.call(_folder)) from None


def _folder(library: Library) -> Path:
    return library.path


async def _fetch_all(lib: LibraryCalls, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    needs = await lib.call(transfers.needs)
    report.files_wanted = len(needs)
    firsts, followers = transfers.travel_once(needs, lambda n: n.sha256)
    for need in [*firsts, *followers]:  # a follower is copied from its first, already in place
        file = PartialFile(need, offsets(need.chunks), set())
        done = await _off_loop(resume_partial, need, file.starts)
        report.bytes_resumed += sum(need.chunks[i][1] for i in done)
        file.remaining = set(range(len(need.chunks))) - done
        report.bytes_local += await _copy_local(lib, file)
        refused = await _fetch_remote(client, ring, file, report) if file.remaining else 0
        if not file.remaining:
            if await _off_loop(transfers.seal_partial, need):
                if await lib.call(transfers.finish, need) != "dropped":
                    report.files += 1
                continue
            reason, detail = Missing.MANIFEST, transfers.REASONS[Missing.MANIFEST]
        elif refused:
            reason, detail = Missing.VERIFICATION, "what the relay sent failed verification"
        else:
            reason = Missing.NO_PEER
            detail = "the relay does not have it yet (the device that has it has not synced with the relay since)"
        await lib.call(transfers.record_missing, need.ref_id, need.name, need.sha256, reason, detail)
        report.missing.append(transfers.MissingFile.of(need, reason, detail))


async def _copy_local(lib: LibraryCalls, file: PartialFile) -> int:
    indexes = sorted(file.remaining)
    copied = 0
    for start in range(0, len(indexes), CHUNK_BATCH):
        batch = indexes[start : start + CHUNK_BATCH]
        locations = await lib.call(transfers.locate, [file.need.chunks[i][0] for i in batch])
        copied += await _off_loop(copy_located, file, batch, locations)
    return copied


async def _fetch_remote(client: RelayClient, ring: keys.Ring, file: PartialFile, report: RelaySyncReport) -> int:
    """Fetch the file's remaining chunks from the relay; returns how many were refused."""
    refused = 0
    indexes = sorted(file.remaining)
    for start in range(0, len(indexes), CHUNK_BATCH):
        part = indexes[start : start + CHUNK_BATCH]
        ids = [crypto.chunk_id(ring.chunk_key, file.need.chunks[i][0]) for i in part]
        found = await _gather_limited([client.get_chunk(cid) for cid in ids])
        items: list[tuple[int, bytes]] = []
        for i, cid, blob in zip(part, ids, found, strict=True):
            if blob is None:  # not on the relay (yet)
                continue
            key = ring.get(blob[1])
            try:
                if key is None:
                    raise RelayTampered(f"the chunk {cid[:12]} needs a library key the relay does not hold")
                data = crypto.decrypt_chunk(key, cid, blob[0])
            except RelayTampered:
                refused += 1
                continue
            if len(data) != file.need.chunks[i][1]:
                refused += 1
                continue
            items.append((i, data))
        good, bad = await _off_loop(verify_and_write, file, items)
        refused += len(bad)
        for i in good:
            file.remaining.discard(i)
            report.bytes_fetched += file.need.chunks[i][1]
    report.chunks_refused += refused
    return refused


async def _off_loop(function: Callable[..., T], *args: Any) -> T:
    """File work (no database) off the event loop, as the LAN fetch does it (net/chunks.py)."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
