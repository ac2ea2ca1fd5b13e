"""Moving attachment bytes (protocol/attachments.md section 4): the fetcher (the serving side is
net/chunk_serving.py and net/chunk_server.py).

The fetcher brings every version this machine lacks (store/transfers.py says which) from any
member that has the chunks, several requests in flight per peer and the work spread over all
peers reached. Each chunk is verified by its SHA-256, named in the signed manifest, before it is
written; one that fails is refused, counted against the peer that sent it and asked of another.
A chunk that is already in any file on this disk is copied from there, not fetched. A partial
file survives an interruption: the next fetch re-checks what it holds and asks only for the rest.
Memory stays flat: at most a few requests' worth of chunks is held at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.errors import DiskFull, P2PSyncError
from p2psync.model.chunking import offsets
from p2psync.net import tls
from p2psync.net.chunk_client import ChunkConnection
from p2psync.net.chunk_io import ChunkStream, Parsed, PartialFile, verify_and_write
from p2psync.net.chunk_serving import MAX_CHUNKS_PER_REQUEST
from p2psync.net.worker import LibraryWorker
from p2psync.store import local_copy, transfers
from p2psync.store import peers as peer_store
from p2psync.store.db import is_disk_full
from p2psync.store.transfers import Missing, MissingFile, Need

SEGMENT_BYTES = 16 * 1024 * 1024  # one request asks for about this much of one file (most files: all of it,
# so its chunks arrive in order and feed the whole-file hash as they are written)
PARALLEL_PER_PEER = 4  # requests in flight to one peer
log = logging.getLogger("p2psync.server")


# --- the client side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A member reached in this sync round, to fetch chunks from."""

    host: str
    port: int
    device: str
    chunks_port: int | None = None  # its chunk listener (net/chunk_server.py), if it said so

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


@dataclass
class FetchReport:
    """What one fetch moved, for `sync --json` and the daemon's log."""

    wanted_files: int = 0
    wanted_bytes: int = 0
    files: int = 0  # versions completed and put in place
    bytes_fetched: int = 0
    bytes_local: int = 0  # copied from files already on this disk
    bytes_resumed: int = 0  # already in partial files from an interrupted fetch
    chunks_refused: int = 0  # failed verification
    by_peer: dict[str, int] = field(default_factory=dict)  # device -> bytes it sent
    refused_by_peer: dict[str, int] = field(default_factory=dict)
    missing: list[MissingFile] = field(default_factory=list)
    peer_errors: dict[str, str] = field(default_factory=dict)  # device -> why fetching from it stopped
    disk_full: str | None = None  # the sentence, when this disk had no room for what was left

    def as_dict(self) -> dict[str, Any]:
        return {
            "wanted_files": self.wanted_files,
            "wanted_bytes": self.wanted_bytes,
            "files": self.files,
            "bytes_fetched": self.bytes_fetched,
            "bytes_local": self.bytes_local,
            "bytes_resumed": self.bytes_resumed,
            "chunks_refused": self.chunks_refused,
            "by_peer": self.by_peer,
            "refused_by_peer": self.refused_by_peer,
            "missing": [m.as_dict() for m in self.missing],
            "peer_errors": self.peer_errors,
            "disk_full": self.disk_full,
        }

    @property
    def interrupted(self) -> bool:
        """Whether a file is missing for a reason the next sync may cure (a cut, a bad copy)."""
        return any(m.reason in (Missing.UNREACHABLE, Missing.VERIFICATION) for m in self.missing)


@dataclass
class _Segment:
    file: PartialFile
    indexes: list[int]
    excluded: set[str] = field(default_factory=set)  # peers that lack these chunks or sent bad ones


class _Peer:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.alive = True
        self.error: str | None = None


Progress = Callable[[int], None]


async def fetch_attachments(
    worker: LibraryWorker,
    links: list[Link],
    on_plan: Callable[[int, int], None] | None = None,
    on_bytes: Progress | None = None,
    parallel: int = PARALLEL_PER_PEER,
    unreachable: int = 0,
) -> FetchReport:
    """Bring every attachment version this machine lacks from the peers in `links`
    (`unreachable`: how many other members were tried in this round and could not be reached)."""
    report = FetchReport()
    needs: list[Need] = await worker.call(transfers.needs)
    report.wanted_files = len(needs)
    report.wanted_bytes = sum(n.size for n in needs)
    if on_plan is not None:
        on_plan(report.wanted_bytes, len(needs))
    advance = on_bytes or (lambda n: None)
    if not needs:
        return report
    loop = asyncio.get_running_loop()
    landing = _Landing(worker)
    files: list[PartialFile] = []
    for need in needs:
        starts = offsets(need.chunks)
        done = await loop.run_in_executor(None, resume_partial, need, starts)
        report.bytes_resumed += sum(need.chunks[i][1] for i in done)
        advance(sum(need.chunks[i][1] for i in done))
        files.append(PartialFile(need, starts, set(range(len(need.chunks))) - done))
    if not _room_for(worker.path, files, report):
        return await _report_missing(worker, files, links, unreachable, report)
    trusted: set[str] = set()  # partial files holding chunks copied on trust (store/local_copy.py)
    try:
        await _bring(worker, landing, files, links, report, advance, parallel, trusted)
        # Built from this disk's chunks on trust, yet not the file named: a file here changed without
        # its size or mtime showing it. Built again with every chunk verified (a failure then is the manifest's).
        again = [f for f in files if f.failed is Missing.MANIFEST and f.need.partial in trusted]
        if again:
            redo = [PartialFile(f.need, f.starts, set(range(len(f.need.chunks)))) for f in again]
            files = [f for f in files if f not in again] + redo
            await _bring(worker, landing, redo, links, report, advance, parallel, None)
    finally:
        landing.cancel()  # (only left on an error)
    return await _report_missing(worker, files, links, unreachable, report)


async def _bring(
    worker: LibraryWorker,
    landing: _Landing,
    files: list[PartialFile],
    links: list[Link],
    report: FetchReport,
    advance: Progress,
    parallel: int,
    trusted: set[str] | None,
) -> None:
    """Complete and land `files`: from this disk first (every file at once: the copies run on
    several threads), then from the peers."""
    # Chunks already on this disk (an older version of the same file, the same PDF elsewhere).
    for copied in await asyncio.gather(*(_copy_local(worker, f, trusted) for f in files if f.remaining)):
        report.bytes_local += copied
        advance(copied)
    for file in files:
        if not file.remaining:
            landing.finish_soon(file, report)
    await landing.settle(report)
    pending = [f for f in files if f.remaining]
    firsts, followers = transfers.travel_once(pending, lambda f: f.need.sha256)
    if firsts:
        await _fetch_remote(worker, landing, firsts, links, report, advance, parallel)
        await landing.settle(report)  # (the first of each version is in place before its followers copy it)
    for file in followers:
        copied = await _copy_local(worker, file, trusted)
        report.bytes_local += copied
        advance(copied)
        if not file.remaining:
            landing.finish_soon(file, report)
    await landing.settle(report)
    if rest := [f for f in followers if f.remaining]:
        await _fetch_remote(worker, landing, rest, links, report, advance, parallel)
    for file in pending:  # whole, but the connection broke after its last chunk was written
        if not file.remaining and file.failed is None:
            landing.finish_soon(file, report)
    await landing.settle(report)


async def _report_missing(
    worker: LibraryWorker, files: list[PartialFile], links: list[Link], unreachable: int, report: FetchReport
) -> FetchReport:
    """Record why each file that did not arrive is missing (for `status`), in the report too."""
    for file in files:
        if not file.remaining and file.failed is None:
            continue
        reason = Missing.DISK_FULL if report.disk_full else file.failed or Missing.NO_PEER
        if not links and unreachable and reason not in (Missing.MANIFEST, Missing.DISK_FULL):
            reason = Missing.UNREACHABLE
        detail = report.disk_full or _detail(reason, file, links, unreachable, report.peer_errors)
        with contextlib.suppress(DiskFull):  # (a full disk may have no room to say so either)
            await worker.call(
                transfers.record_missing, file.need.ref_id, file.need.name, file.need.sha256, reason, detail
            )
        report.missing.append(MissingFile.of(file.need, reason, detail))
    return report


# Room kept free beyond the chunks themselves: the database records what arrived.
DISK_MARGIN = 16 * 1024 * 1024


def _room_for(library: Path, files: list[PartialFile], report: FetchReport) -> bool:
    """Whether this disk can take the chunks still to fetch; if not, say so in the report (and
    fetch nothing: a file that cannot be completed would only fill the disk to no use)."""
    need = sum(file.need.chunks[i][1] for file in files for i in file.remaining) + DISK_MARGIN
    free = shutil.disk_usage(library).free
    if free >= need:
        return True
    report.disk_full = DiskFull(library, need - free).message
    return False


def _detail(reason: Missing, file: PartialFile, links: list[Link], unreachable: int, errors: dict[str, str]) -> str:
    if not links:
        if unreachable:
            return f"no device of this library could be reached ({unreachable} tried)"
        return "no device of this library was reached"
    if reason == Missing.UNREACHABLE and errors:
        why = "; ".join(f"{device[:7]}: {error}" for device, error in sorted(errors.items()))
        return f"{transfers.REASONS[reason]} ({why})"
    if reason == Missing.VERIFICATION:
        return (
            "what "
            + ", ".join(sorted({p[:7] for s in file.refused_at.values() for p in s}))
            + " sent failed verification"
        )
    return transfers.REASONS[reason]  # (manifest: every chunk matched its name, but not the file)


def resume_partial(need: Need, starts: list[int]) -> set[int]:
    """Chunk indexes a partial file already holds, each re-verified (a crash may have lost
    writes that were not yet on disk)."""
    path = Path(need.partial)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return set()
    done: set[int] = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        length = os.fstat(fd).st_size
        for index, (digest, size) in enumerate(need.chunks):
            if starts[index] + size > length:
                break
            data = os.pread(fd, size, starts[index])
            if hashlib.sha256(data).hexdigest() == digest:
                done.add(index)
    finally:
        os.close(fd)
    return done


async def _copy_local(worker: LibraryWorker, file: PartialFile, trusted: set[str] | None = None) -> int:
    """Copy the chunks of `file` that this disk holds; with `trusted`, those in files unchanged
    since indexed are copied by the kernel and not re-hashed (store/local_copy.py; the partial
    file is then named in `trusted`), the others verified."""
    indexes = sorted(file.remaining)
    loop = asyncio.get_running_loop()
    copied = 0
    for start in range(0, len(indexes), MAX_CHUNKS_PER_REQUEST):
        batch = indexes[start : start + MAX_CHUNKS_PER_REQUEST]
        names = [file.need.chunks[i][0] for i in batch]
        locations = await worker.call(transfers.locate, names, (file.need.ref_id, file.need.name))
        if trusted is not None:
            done, _ = await loop.run_in_executor(
                None, local_copy.copy_trusted, file.need.partial, file.starts, batch, locations
            )
            if done:
                trusted.add(file.need.partial)
                file.remaining.difference_update(done)
                copied += sum(file.need.chunks[i][1] for i in done)
                kept = [(i, loc) for i, loc in zip(batch, locations, strict=True) if i in file.remaining]
                batch, locations = [i for i, _ in kept], [loc for _, loc in kept]
        if any(location is not None for location in locations):
            copied += await loop.run_in_executor(None, copy_located, file, batch, locations)
    return copied


def copy_located(file: PartialFile, batch: list[int], locations: list[transfers.Location | None]) -> int:
    """Write into the partial file the chunks of `batch` that this disk holds (where
    transfers.locate found them; None: nowhere), each verified; they leave file.remaining.
    Returns the bytes copied. Reads and writes files only, so it may run off the event loop."""
    found = [(i, loc) for i, loc in zip(batch, locations, strict=True) if loc is not None]
    if not found:
        return 0
    datas = transfers.read_chunks([loc for _, loc in found])  # one open per run of chunks
    good, _ = verify_and_write(file, [(i, d) for (i, _), d in zip(found, datas, strict=True) if d is not None])
    for i in good:
        file.remaining.discard(i)
    return sum(file.need.chunks[i][1] for i in good)


async def _finish(landing: _Landing, file: PartialFile, report: FetchReport) -> None:
    if file.finished:
        return
    file.finished = True
    seal = transfers.seal_partial
    if not await asyncio.get_running_loop().run_in_executor(None, seal, file.need, file.digest, file.hashed):
        file.failed = Missing.MANIFEST
        return
    if await landing.land(file.need) != "dropped":
        report.files += 1


class _Landing:
    """Puts whole files in place in batches (transfers.finish_all): while the library's thread
    records one batch, the files sealed meanwhile wait and go together in the next."""

    def __init__(self, worker: LibraryWorker) -> None:
        self.worker = worker
        self.waiting: list[tuple[Need, asyncio.Future[str]]] = []
        self.busy = False
        self.finishing: list[tuple[PartialFile, asyncio.Task[None]]] = []

    def finish_soon(self, file: PartialFile, report: FetchReport) -> None:
        """Seal and land a whole file in the background (settle() waits for it): a fetch goes
        on with the next chunks meanwhile, and the files sealed meanwhile land in one batch."""
        self.finishing.append((file, asyncio.get_running_loop().create_task(_finish(self, file, report))))

    async def settle(self, report: FetchReport) -> None:
        """Wait for every file given to finish_soon. A full disk is told in the report (and the
        file is missing for that reason); any other error is raised."""
        started, self.finishing = self.finishing, []
        results = await asyncio.gather(*(task for _, task in started), return_exceptions=True)
        for (file, _), result in zip(started, results, strict=True):
            if isinstance(result, DiskFull) or (
                isinstance(result, Exception) and is_disk_full(result, self.worker.path)
            ):
                file.failed = Missing.DISK_FULL
                report.disk_full = report.disk_full or DiskFull(self.worker.path, file.need.size).message
            elif isinstance(result, BaseException):
                raise result

    def cancel(self) -> None:
        for _, task in self.finishing:
            task.cancel()
        self.finishing = []

    async def land(self, need: Need) -> str:
        """Where the file went (as transfers.finish says)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.append((need, future))
        if not self.busy:  # this call records batches until none is waiting; the others wait
            self.busy = True
            try:
                while self.waiting:
                    batch, self.waiting = self.waiting, []
                    try:
                        places = await self.worker.call(transfers.finish_all, [n for n, _ in batch])
                    except Exception as exc:
                        for _, waiting in batch:
                            if not waiting.done():
                                waiting.set_exception(exc)
                    except BaseException:
                        self.waiting = batch + self.waiting
                        raise
                    else:
                        for (_, waiting), place in zip(batch, places, strict=True):
                            if not waiting.done():
                                waiting.set_result(place)
            finally:
                self.busy = False
                for _, waiting in self.waiting:  # (only when cancelled: nobody is left to record them)
                    waiting.cancel()
                self.waiting = []
        return await future


def _segments(file: PartialFile) -> list[_Segment]:
    out: list[_Segment] = []
    current: list[int] = []
    size = 0
    for index in sorted(file.remaining):
        current.append(index)
        size += file.need.chunks[index][1]
        if size >= SEGMENT_BYTES or len(current) >= MAX_CHUNKS_PER_REQUEST:
            out.append(_Segment(file, current))
            current, size = [], 0
    if current:
        out.append(_Segment(file, current))
    return out


async def _fetch_remote(
    worker: LibraryWorker,
    landing: _Landing,
    files: list[PartialFile],
    links: list[Link],
    report: FetchReport,
    advance: Progress,
    parallel: int,
) -> None:
    if not links:
        for file in files:
            file.failed = Missing.NO_PEER
        return
    queue: list[_Segment] = [s for f in files for s in _segments(f)]
    peers = [_Peer(link) for link in links]
    cond = asyncio.Condition()
    busy = 0
    identity = await worker.call(_identity, worker)

    def take(peer: _Peer) -> _Segment | None:
        live = {p.link.device for p in peers if p.alive}
        for segment in list(queue):
            if live <= segment.excluded:  # nobody left to ask
                queue.remove(segment)
                _give_up(segment, peers)
                continue
            if peer.link.device not in segment.excluded:
                queue.remove(segment)
                return segment
        return None

    async def run(peer: _Peer, connection: ChunkConnection) -> None:
        nonlocal busy
        while True:
            async with cond:
                while True:
                    segment = take(peer) if peer.alive else None
                    if segment is not None:
                        busy += 1
                        break
                    if busy == 0 or not peer.alive:
                        cond.notify_all()
                        return
                    await cond.wait()
            try:
                await _fetch_segment(landing, pool, connection, segment, report, advance, queue)
            except (P2PSyncError, TimeoutError, OSError) as exc:
                if is_disk_full(exc) or isinstance(exc, DiskFull):  # our disk, not the peer's fault: stop all
                    rest = sum(segment.file.need.chunks[i][1] for i in segment.indexes if i in segment.file.remaining)
                    report.disk_full = report.disk_full or DiskFull(worker.path, rest).message
                    for other in peers:
                        other.alive = False
                    queue.clear()
                    continue
                peer.alive = False
                peer.error = _in_words(exc)
                rest = [i for i in segment.indexes if i in segment.file.remaining]  # not what was written
                if rest:  # another peer takes it, or nobody is left and it is given up
                    queue.append(_Segment(segment.file, rest, segment.excluded))
            finally:
                async with cond:
                    busy -= 1
                    cond.notify_all()

    # One connection, and one thread to read it, per request in flight (net/chunk_client.py).
    connections = [[_connection(identity, peer.link) for _ in range(parallel)] for peer in peers]
    pool = ThreadPoolExecutor(max_workers=len(peers) * parallel, thread_name_prefix="p2psync-chunks")
    try:
        await asyncio.gather(*(run(peer, c) for peer, mine in zip(peers, connections, strict=True) for c in mine))
    finally:
        for mine in connections:
            for connection in mine:
                connection.close()
        pool.shutdown(wait=False)
    for segment in queue:  # left when every peer died
        _give_up(segment, peers)
    for peer in peers:
        if peer.error is not None:
            report.peer_errors[peer.link.device] = peer.error
            address = f"{peer.link.host}:{peer.link.port}"
            await worker.call(peer_store.record_error, peer.link.device, address, f"Fetching attachments: {peer.error}")


def _in_words(exc: BaseException) -> str:
    if isinstance(exc, P2PSyncError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "stopped answering"
    return "the connection broke off"


def _give_up(segment: _Segment, peers: list[_Peer]) -> None:
    file = segment.file
    if file.failed is not None:
        return
    if any(i in file.refused_at for i in segment.indexes):
        file.failed = Missing.VERIFICATION
    elif any(not p.alive for p in peers) and all(not p.alive or p.link.device in segment.excluded for p in peers):
        file.failed = Missing.UNREACHABLE if not any(p.alive for p in peers) else Missing.NO_PEER
    else:
        file.failed = Missing.NO_PEER


def _identity(library: Any, worker: LibraryWorker) -> tuple[dict[str, bytes], str, tuple[Any, Any], str]:
    import base64

    keys = {d["device_id"]: base64.b64decode(d["public_key"]) for d in library.devices() if not d["revoked"]}
    files = tls.certificate_files(library.identity(), worker.key_file, library.path)
    return keys, library.library_id, files, library.device_id


def _connection(identity: tuple[dict[str, bytes], str, tuple[Any, Any], str], link: Link) -> ChunkConnection:
    keys, library_id, (cert, key), _me = identity
    expected = keys.get(link.device)
    context = tls.client_context(cert, key, lambda shown: shown == expected)
    port, fallback = (link.chunks_port, link.port) if link.chunks_port else (link.port, None)
    connection = ChunkConnection(link.host, port, link.device, context, lambda shown: shown == expected, library_id)
    connection.fallback_port = fallback  # (the peer server's own /chunks, if the chunk listener cannot be reached)
    return connection


async def _fetch_segment(
    landing: _Landing,
    pool: ThreadPoolExecutor,
    connection: ChunkConnection,
    segment: _Segment,
    report: FetchReport,
    advance: Progress,
    queue: list[_Segment],
) -> None:
    file = segment.file
    device = connection.device
    names = [file.need.chunks[i][0] for i in segment.indexes]
    loop = asyncio.get_running_loop()
    lacking: list[int] = []
    refused: list[int] = []

    def count(parsed: Parsed) -> None:
        for i in parsed.good:
            file.remaining.discard(i)
        moved = sum(file.need.chunks[i][1] for i in parsed.good)
        report.bytes_fetched += moved
        report.by_peer[device] = report.by_peer.get(device, 0) + moved
        advance(moved)
        lacking.extend(parsed.lacking)
        if parsed.bad:
            report.chunks_refused += len(parsed.bad)
            report.refused_by_peer[device] = report.refused_by_peer.get(device, 0) + len(parsed.bad)
            refused.extend(parsed.bad)

    def on_batch(parsed: Parsed) -> None:  # (from the connection's thread; counted on the loop, in order,
        loop.call_soon_threadsafe(count, parsed)  # before the fetch's own result arrives)

    stream = ChunkStream(file, segment.indexes, device)
    try:
        await loop.run_in_executor(pool, connection.fetch, names, stream, on_batch)
    except asyncio.CancelledError:
        connection.close()  # wakes the thread: it stops with the connection
        raise
    for index in refused:
        file.refused_at.setdefault(index, set()).add(device)
    retry = sorted(set(lacking) | set(refused))
    if retry:
        queue.append(_Segment(file, retry, segment.excluded | {device}))
    elif not file.remaining and file.failed is None:
        landing.finish_soon(file, report)
