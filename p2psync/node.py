"""One running device: the library, its peer server, and (as a daemon) the automatic syncs.

The daemon syncs at start, within about a second of a change another process made to the
library (it watches SQLite's data_version), when a member appears on the LAN (mDNS), soon after a
peer pushed changes to it (so that they travel on: A -> B -> C), on an interval, and once more on
a clean stop. Everything here is I/O wiring; the rules are in engine/ and store/.

An attachment edited in place (a PDF annotated in a viewer) travels without a wait on the way:
the operating system tells the daemon's watcher (watching.py) which files were written; once the
writes pause (50 ms) only those files are read and recorded as new versions, and the round that a
new local change starts pushes them to the members at once. A daemon that receives such a push
fetches the versions it names from the members it knows right away (`_pushed`), before the round
that passes the news on. A periodic scan of every file stays as the fallback: every minute with
the watcher, every SCAN_SECONDS without one.

mDNS records are untrusted: they only say where to knock. Who answers is settled by mutual TLS
with the member's pinned key (sync_with_peer with device=...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from p2psync import regular_backups
from p2psync.errors import DiskFull, NetworkError, P2PSyncError, PeerUnreachable, SelfConnection
from p2psync.model.sizes import human_size
from p2psync.net import tls
from p2psync.net.addresses import Address, merge_targets
from p2psync.net.addresses import parse_address as parse_address  # (re-exported for the CLI)
from p2psync.net.chunk_server import ChunkServer
from p2psync.net.chunk_server import server_context as chunk_context
from p2psync.net.chunks import FetchReport, Link, fetch_attachments
from p2psync.net.client import PeerSync, sync_with_peer
from p2psync.net.discovery import browse_until
from p2psync.net.presence import LanPresence, members_seen
from p2psync.net.presence import announce_addresses as announce_addresses  # (re-exported)
from p2psync.net.protocol import PREFIX
from p2psync.net.server import CHUNKS_PORT, PEER, listen, make_app
from p2psync.net.worker import LibraryWorker
from p2psync.round_steps import Arrival, PeerDone, PeersPlanned, RelayDone, StepCallback, SyncResult, progress_steps
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.sync import unsealed_count, version_vector
from p2psync.sync_status import ProgressRecorder
from p2psync.watching import AttachmentWatcher, Touched, scan_edits

log = logging.getLogger("p2psync.node")
WATCH_SECONDS = 0.2  # how often the daemon looks for changes made by other processes
FORWARD_DELAY = 0.25  # after changes arrived: wait this long for more before passing them on...
FORWARD_MAX_DELAY = 2.0  # ...but never longer than this after the first (a steady stream must not starve it)
DISCOVER_SECONDS = 2.0  # how long a one-shot sync looks for members on the LAN
# How often the daemon looks at every attachment file for edits in place when the operating
# system's notifications are not there to say which (P2PSYNC_SCAN_SECONDS changes it: tests make it
# long, with P2PSYNC_WATCH=0, to show that a receive records local edits by itself), and how often
# as a fallback while they are.
SCAN_SECONDS = float(os.environ.get("P2PSYNC_SCAN_SECONDS") or 2.0)
WATCHED_SCAN_SECONDS = max(SCAN_SECONDS, 60.0)
DISK_FULL_PAUSE = 5.0  # seconds the daemon waits after a full disk stopped a step
WATCH = os.environ.get("P2PSYNC_WATCH", "1") != "0"  # 0: no file notifications, the scan only
UNSETTLED_SECONDS = 0.25  # a file still being written when read is read again this much later
PUSH_PATH = PREFIX + "/push"


@dataclass
class SyncRound:
    """What one round of Node.sync_once did: the peers tried, in order, and what came of each;
    the attachments fetched from those reached; the relay's report (relay/link.py) or the error
    that stopped it, when the library is linked to an account; and which addresses the user named
    could not be synced."""

    targets: list[Address] = field(default_factory=list)
    peers: list[SyncResult] = field(default_factory=list)
    attachments: FetchReport = field(default_factory=FetchReport)
    relay: Any = None
    relay_error: P2PSyncError | None = None
    named_failed: list[str] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)  # members that synced with us (sync --wait)

    @property
    def lan_ok(self) -> bool:
        return any(not isinstance(r, NetworkError) for r in self.peers) or bool(self.arrivals)


def other_members(library: Library) -> list[str]:
    return [d.device_id for d in library.members.listing() if not d.revoked and not d.this_device]


class Node:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.worker = LibraryWorker(self.path)
        self._runner: web.AppRunner | None = None
        self.chunk_server: ChunkServer | None = None  # (None until serve(), or if it could not listen)
        self.host: str | None = None
        self.port: int | None = None
        self._sync_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # the daemon loop looks at once (a member appeared)
        self._forwarding = False  # the daemon passes on changes that arrive (not a one-shot node)
        self._forward_at: float | None = None
        self._forward_first = 0.0
        self._lan: LanPresence | None = None
        self._fetch_due = False  # a peer pushed change sets: fetch the attachments they name now
        self.last_fetch: FetchReport | None = None
        self.watching = False  # the daemon's attachment watcher is running
        # The server's requests, for a waiting one-shot sync (meeting.py): how many are being
        # answered, when the last ended, and who synced with us.
        self.serving = 0
        self.last_served = 0.0
        self.on_arrival: Callable[[Arrival], None] | None = None
        self.progress: ProgressRecorder | None = None  # the daemon's, for `status --watch`

    async def serve(self, host: str, port: int, setup: Callable[[web.Application], None] | None = None) -> int:
        """Start the peer server; returns the port it listens on. `setup` may add routes."""
        cert, key = await self.worker.call(
            lambda library: tls.certificate_files(library.identity(), self.worker.key_file, library.path)
        )

        def set_up(app: web.Application) -> None:
            app.middlewares.append(self._note_request)  # (last: inside the membership check)
            if setup is not None:
                setup(app)

        app = make_app(self.worker, on_change=self._pushed, setup=set_up)
        # Behind the gate (net/gate.py): handshake and header deadlines, a cap on strangers.
        self._runner, self.port = await listen(app, host, port, tls.server_context(cert, key))
        self.host = host
        # Attachment chunks are served from threads on a port of their own, told in the /vv answer.
        chunk_server = ChunkServer(self.worker, chunk_context(cert, key), self._note_chunk_request)
        try:
            app[CHUNKS_PORT].append(chunk_server.start(host))
            self.chunk_server = chunk_server
        except OSError as exc:  # (peers then fetch chunks from the peer server itself)
            log.warning("attachment chunks are served by the peer server only: %s", exc)
        return self.port

    def _note_chunk_request(self, started: bool) -> None:
        """The chunk listener's requests count as the server's (a waiting sync lets them end)."""
        self.serving += 1 if started else -1
        if not started:
            self.last_served = asyncio.get_running_loop().time()

    @web.middleware
    async def _note_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count the requests being answered, and tell on_arrival of a member's finished push
        (the last step of its sync: it has pulled ours and pushed its own)."""
        self.serving += 1
        try:
            response = await handler(request)
        finally:
            self.serving -= 1
            self.last_served = asyncio.get_running_loop().time()
        device = request.get(PEER)
        if self.on_arrival is not None and request.path == PUSH_PATH and response.status == 200 and device:
            applied = 0
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                applied = int(json.loads(getattr(response, "body", b"") or b"{}").get("applied", 0))
            self.on_arrival(Arrival(device, f"{request.remote}", applied))
        return response

    async def start_lan(self, interfaces: list[str] | None) -> None:
        """Announce this device on mDNS and keep track of the members that appear (serve() first)."""
        if self.port is None or self.host is None:
            raise RuntimeError("serve() before start_lan(): the announcement needs the port")
        me = await self.worker.call(lambda library: library.device_id)
        self._lan = LanPresence(me, self.port, announce_addresses(self.host, interfaces), interfaces, self._wake.set)
        await self._lan.start()

    async def stop_lan(self) -> None:
        if self._lan is not None:
            lan, self._lan = self._lan, None
            await lan.stop()

    def _changes_arrived(self) -> None:
        """Change sets from a peer were applied (pushed to our server, or pulled by us): pass them on
        to the other peers soon, once a short burst is over. Only real news calls this, and news
        runs out, so two daemons never sync back and forth for ever."""
        if self._lan is not None:
            self._lan.dirty = True  # the news may be a new member that is already on the LAN
        if not self._forwarding:
            return
        now = asyncio.get_running_loop().time()
        if self._forward_at is None:
            self._forward_first = now
        self._forward_at = min(now + FORWARD_DELAY, self._forward_first + FORWARD_MAX_DELAY)

    def _pushed(self) -> None:
        """A peer pushed change sets to our server: pass them on as any news, and have the daemon
        fetch the attachment versions they name at once (`_fetch_pushed`), not after the forward
        round's pause."""
        self._changes_arrived()
        if self._forwarding:
            self._fetch_due = True
            self._wake.set()

    async def sync(self, addresses: Iterable[Address], on_step: StepCallback | None = None) -> list[SyncResult]:
        """Sync with each address in turn (one sync at a time per node); failures are returned,
        already recorded for `status`, and do not stop the others. An address's `also` hosts are
        tried, in order, while the previous one is unreachable."""
        results: list[SyncResult] = []
        synced: dict[str, PeerSync] = {}  # a device reached once this call is not synced again
        async with self._sync_lock:
            for address in addresses:
                if address.device is not None and address.device in synced:
                    results.append(synced[address.device])  # the same object: callers can tell
                    if on_step is not None:
                        on_step(PeerDone(address, synced[address.device]))
                    continue
                result: SyncResult | None = None
                for host in (address.host, *address.also):
                    try:
                        result = await sync_with_peer(self.worker, host, address.port, address.device, self.port)
                    except PeerUnreachable as exc:
                        result = exc
                        continue
                    except NetworkError as exc:
                        result = exc
                    break
                assert result is not None  # (address.host is always tried)
                if isinstance(result, PeerSync) and result.device:
                    synced[result.device] = result
                results.append(result)
                if on_step is not None:
                    on_step(PeerDone(address, result))
        return results

    async def fetch(
        self,
        results: Iterable[SyncResult],
        on_plan: Callable[[int, int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> FetchReport:
        """Bring the attachment versions this device lacks from the peers just synced with."""
        links: dict[str, Link] = {}
        results = list(results)
        failed = sum(1 for r in results if isinstance(r, NetworkError))
        for result in results:
            if isinstance(result, PeerSync) and result.device and result.device not in links:
                host, port = _split(result.address)
                links[result.device] = Link(host, port, result.device, result.chunks_port)
        return await self._fetch_from(list(links.values()), failed, on_plan, on_bytes)

    async def _fetch_from(
        self,
        links: list[Link],
        failed: int = 0,
        on_plan: Callable[[int, int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> FetchReport:
        async with self._sync_lock:
            try:
                report = await fetch_attachments(
                    self.worker, links, on_plan, on_bytes, unreachable=failed if not links else 0
                )
            except DiskFull as exc:  # filled up meanwhile (by something else): what arrived whole is kept
                report = FetchReport(disk_full=exc.message)
        self.last_fetch = report
        if report.disk_full:
            log.warning("Attachments: %s", report.disk_full)
        if report.files or report.missing:
            log.info(
                "attachments: %d files in (%s fetched, %s from this disk), %d still missing",
                report.files,
                human_size(report.bytes_fetched),
                human_size(report.bytes_local),
                len(report.missing),
            )
        return report

    async def known_addresses(self) -> list[Address]:
        """Remembered addresses of current members (other than this device)."""

        def collect(library: Library) -> list[Address]:
            members = set(other_members(library))
            out = []
            for device, text in peer_store.remembered_addresses(library).items():
                if device in members:
                    with contextlib.suppress(P2PSyncError):
                        out.append(Address(*_split(text), device=device))
            return out

        return await self.worker.call(collect)

    async def find_members(
        self, interfaces: list[str] | None, timeout: float = DISCOVER_SECONDS, device: str | None = None
    ) -> list[Address]:
        """Look on the LAN (mDNS) for the other members (or only `device`) for at most `timeout`
        seconds, less once all of them were seen. Raises DiscoveryError where mDNS cannot work."""
        members = await self.worker.call(other_members)
        wanted = [m for m in members if device is None or m == device]
        me = await self.worker.call(lambda library: library.device_id)
        if not wanted:
            return []
        peers = await browse_until(
            interfaces, lambda peers: len(members_seen(peers, wanted, me)) == len(wanted), timeout
        )
        return list(members_seen(peers, wanted, me).values())

    async def sync_once(
        self,
        *groups: Iterable[Address],
        named: Collection[Address] = (),
        device: str | None = None,
        lan: bool = True,
        relay: bool = True,
        on_plan: Callable[[int, int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
        on_step: StepCallback | None = None,
    ) -> SyncRound:
        """One round, the same for `p2psync sync`, the daemon and any other face: every member
        at the addresses of `groups` in that order, then those remembered (only `device`, if
        given), each reached once (none without `lan`); then their attachments; then the relay
        account, with `relay` and if the library is linked to one. Failures are in the result, already recorded for
        `status`; nothing here raises for a peer or a relay that failed. `on_step` hears each
        part as it ends (PeersPlanned, PeerDone per address, RelayDone); on_plan/on_bytes the
        attachments' progress."""
        done = SyncRound()
        if lan:
            known = [a for a in await self.known_addresses() if device is None or a.device == device]
            done.targets = merge_targets(*groups, known)
        if on_step is not None:
            on_step(PeersPlanned(tuple(done.targets)))
        if done.targets:
            done.peers = await self.sync(done.targets, on_step)
            places = {(a.host, a.port) for a in named}
            done.named_failed = [
                str(target)
                for target, result in zip(done.targets, done.peers, strict=True)
                if isinstance(result, NetworkError) and (target.host, target.port) in places
            ]
            done.attachments = await self.fetch(done.peers, on_plan, on_bytes)
        if relay:
            outcome = await _sync_relay(self.worker)  # its database work on the worker: the LAN is served meanwhile
            if isinstance(outcome, P2PSyncError):
                done.relay_error = outcome
            else:
                done.relay = outcome
        if on_step is not None:
            on_step(RelayDone(done.relay, done.relay_error))
        return done

    async def members_on_lan(self) -> list[Address]:
        """The members a daemon's mDNS sees now, at their freshest address (none without mDNS):
        what a round started by another face (the web app) tries first, as the daemon's own does."""
        return self._lan_now(await self.worker.call(other_members))

    def _lan_now(self, members: list[str]) -> list[Address]:
        """Members seen on the LAN now, at their freshest address (tried first in a round)."""
        return [] if self._lan is None else list(self._lan.seen(members).values())

    async def run_daemon(
        self,
        stop: asyncio.Event,
        static: list[Address],
        interval: float,
        auto: bool = True,
        mdns: bool = False,
        mdns_interfaces: list[str] | None = None,
        backups: regular_backups.RegularBackups | None = None,
    ) -> None:
        """Sync on start, on the interval and on stop; with `auto` also on local changes, when a
        member appears on the LAN and after changes arrived from a peer. With `mdns`, announce this
        device and look for the others (call serve() first). With `backups`, back up on that
        schedule, on a thread of its own (the library is served and synced meanwhile)."""
        loop = asyncio.get_running_loop()
        self._forwarding = auto
        regular = await regular_backups.Running.started(self.path, backups)
        if mdns:
            await self.start_lan(mdns_interfaces)
        watcher = AttachmentWatcher(self.path, self._wake.set) if WATCH else None
        self.progress = ProgressRecorder(self.path)  # what `status --watch` shows of our rounds
        try:
            if watcher is not None and await watcher.start():
                log.info("Watching %s for attachments edited in place.", watcher.folder)
            with _room_later():
                await self._round(static, relay=True)
            version = await self.worker.call(Library.data_version)
            known_foreign = await self.worker.call(_foreign_vector)
            next_interval = loop.time() + interval
            last_scan = loop.time()
            while not stop.is_set():
                self.watching = watcher is not None and watcher.running
                regular.tick()
                await self._pause(stop)
                if stop.is_set():
                    break
                with _room_later() as full:
                    if self._fetch_due:
                        self._fetch_due = False
                        await self._fetch_pushed()
                    now = loop.time()
                    edited = False
                    # PDFs annotated in place become new versions (store/library/attachments.py): the
                    # files the watcher saw written at once, all of them now and then as a fallback.
                    touched = watcher.take() if watcher is not None else None
                    if now >= last_scan + (WATCHED_SCAN_SECONDS if self.watching else SCAN_SECONDS):
                        last_scan, touched = now, "all"
                    if touched is not None:
                        edited = await self._look(touched, watcher)
                    current = await self.worker.call(Library.data_version)
                    local_change = current != version or edited
                    version = current
                    if local_change and auto:
                        foreign = await self.worker.call(_foreign_vector)
                        if foreign != known_foreign:  # another process (a one-shot sync, pair) brought news
                            known_foreign = foreign
                            self._changes_arrived()
                    forward = self._forward_at is not None and now >= self._forward_at
                    if (
                        now >= next_interval
                        or forward
                        or (auto and local_change and await self.worker.call(unsealed_count) > 0)
                    ):
                        self._forward_at = None  # what arrives during this round schedules another
                        relay = now >= next_interval  # the relay only on the interval, not on every edit
                        await self._round(static, relay)
                        if relay:
                            next_interval = now + interval
                    elif auto and self._lan is not None and self._lan.wants_look(now):
                        await self._meet(self._lan)
                if full:  # nothing can be taken in or recorded: look again after a pause, not at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DISK_FULL_PAUSE)
            with _room_later():
                await self._round(static, relay=True)  # a clean stop leaves nothing unsent
        finally:
            self._forwarding = False
            self.watching = False
            await regular.finish()
            if watcher is not None:
                await watcher.stop()
            await self.stop_lan()
            self.progress.close()
            self.progress = None

    async def _look(self, touched: Touched, watcher: AttachmentWatcher | None) -> bool:
        """Record the touched attachment files (or all) that were edited in place; True if any
        was. A file still being written is looked at again a little later."""
        edits = await self.worker.call(scan_edits, touched)
        if edits.modified:
            log.info("attachments: %d edited here, recorded as new versions", edits.modified)
        if edits.unsettled and watcher is not None and watcher.running:
            asyncio.get_running_loop().call_later(UNSETTLED_SECONDS, watcher.touch, edits.unsettled)
        return edits.modified > 0

    async def _fetch_pushed(self) -> None:
        """Fetch what a push named from the members known by device (on the LAN, remembered);
        the pusher is among them: its address was remembered when it made itself known."""
        lan = await self.members_on_lan()
        known = await self.known_addresses()
        links = [Link(a.host, a.port, a.device) for a in merge_targets(lan, known) if a.device is not None]
        if links:
            await self._fetch_from(links)

    def _log_relay(self, done: SyncRound) -> None:
        """The relay part of a daemon's round in the log; errors never stop the daemon (they are
        recorded for `status` too)."""
        if done.relay_error is not None:
            log.warning("Relay: %s", done.relay_error.message)
            return
        report = done.relay
        if report is None:
            return
        log.info("synced with the relay %s: %s.", report.relay, report.sentence())
        for error in report.errors:
            log.warning("Relay: %s", error)
        if report.received.applied:
            self._changes_arrived()  # pass what came through the relay on to the LAN peers

    async def _pause(self, stop: asyncio.Event) -> None:
        """Wait WATCH_SECONDS, less if a forward is due sooner; at once on stop or a wake-up."""
        loop = asyncio.get_running_loop()
        timeout = WATCH_SECONDS
        if self._forward_at is not None:
            timeout = max(0.0, min(timeout, self._forward_at - loop.time()))
        waiters = [loop.create_task(stop.wait()), loop.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()

    async def _meet(self, lan: LanPresence) -> None:
        """Sync with each member that appeared (or moved) on the LAN, at the address it announced."""
        due = lan.due(await self.worker.call(other_members), asyncio.get_running_loop().time())
        for address in due:
            log.info("Device %s is on the LAN at %s.", (address.device or "")[:7], address)
            [result] = await self.sync([address])
            self._log(result)
            await self.fetch([result])
            lan.record(address, not isinstance(result, NetworkError), asyncio.get_running_loop().time())
            if isinstance(result, PeerSync) and result.received.applied:
                self._changes_arrived()

    async def _round(self, static: list[Address], relay: bool) -> None:
        """A daemon's round (sync_once: the LAN's members first, then the addresses given and
        those remembered; the relay with `relay`); news pulled from one peer is passed on to the
        others soon after."""
        lan = await self.members_on_lan()
        progress = self.progress
        if progress is None:
            done = await self.sync_once(lan, static, relay=relay)
        else:
            progress.round_started()
            try:
                done = await self.sync_once(
                    lan,
                    static,
                    relay=relay,
                    on_plan=progress.plan,
                    on_bytes=progress.advance,
                    on_step=progress_steps(progress),
                )
            finally:
                progress.round_ended()
        now = asyncio.get_running_loop().time()
        for address, result in zip(done.targets, done.peers, strict=True):
            self._log(result)
            if self._lan is not None and address in lan:
                self._lan.record(address, not isinstance(result, NetworkError), now)
        self._log_relay(done)
        # News from the second target on may be missing at those synced before it.
        if any(isinstance(r, PeerSync) and r.received.applied for r in done.peers[1:]):
            self._changes_arrived()

    def _log(self, result: SyncResult) -> None:
        if isinstance(result, SelfConnection):
            log.debug("%s", result.message)  # an address of our own: skipped, not a problem
        elif isinstance(result, NetworkError):
            log.warning("%s", result.message)
        else:
            log.info(
                "synced with %s at %s: %d change sets in, %s out",
                result.name,
                result.address,
                result.received.applied,
                result.sent_applied,
            )

    async def close(self) -> None:
        if self.chunk_server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.chunk_server.close)
            self.chunk_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.worker.close()


@contextlib.contextmanager
def _room_later() -> Iterator[list[DiskFull]]:
    """A full disk ends the daemon's step, not the daemon: logged, and tried again later (the
    step's writes are transactional, so nothing was half done)."""
    full: list[DiskFull] = []
    try:
        yield full
    except DiskFull as exc:
        log.warning("%s Syncing goes on once there is room.", exc.message)
        full.append(exc)


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _sync_relay(worker: LibraryWorker) -> Any:
    """The relay round: None if the library is not linked, else the report or the error. Its
    database work goes through the library worker like the LAN's, so peers are served meanwhile."""
    from p2psync.relay import state, sync_round  # only a linked library needs the relay client

    try:
        if not await worker.call(state.is_linked):
            return None
        return await sync_round.sync_with_relay(worker)
    except P2PSyncError as exc:
        return exc


def _foreign_vector(library: Library) -> dict[str, int]:
    """The version vector without this device: it changes when change sets from others arrive."""
    vector = version_vector(library)
    vector.pop(library.device_id, None)
    return vector
