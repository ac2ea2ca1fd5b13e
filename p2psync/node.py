"""One running device: the library, its peer server, and (as a daemon) the automatic syncs.

The daemon syncs at start, within about a second of a change another process made to the
library (it watches SQLite's data_version), when a member appears on the LAN (mDNS), soon after a
peer pushed changes to it (so that they travel on: A -> B -> C), on an interval, and once more on
a clean stop. Everything here is I/O wiring; the rules are in engine/ and store/.

mDNS records are untrusted: they only say where to knock. Who answers is settled by mutual TLS
with the member's pinned key (sync_with_peer with device=...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from p2psync.errors import DiskFull, InvalidValue, NetworkError, P2PSyncError, PeerUnreachable, SelfConnection
from p2psync.net import tls
from p2psync.net.chunks import FetchReport, Link, fetch_attachments
from p2psync.net.client import PeerSync, sync_with_peer
from p2psync.net.discovery import MDNS_ID_LENGTH, Announcer, Browser, DiscoveryError, Peer, browse_until
from p2psync.net.interfaces import local_ipv4_addresses
from p2psync.net.server import listen, make_app
from p2psync.net.worker import LibraryWorker
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.sync import unsealed_count, version_vector

log = logging.getLogger("p2psync.node")
WATCH_SECONDS = 0.2  # how often the daemon looks for changes made by other processes
FORWARD_DELAY = 0.25  # after changes arrived: wait this long for more before passing them on...
FORWARD_MAX_DELAY = 2.0  # ...but never longer than this after the first (a steady stream must not starve it)
LAN_RETRY_FIRST = 2.0  # a member seen on the LAN that could not be synced is tried again after this...
LAN_RETRY_MAX = 60.0  # ...doubling up to this
DISCOVER_SECONDS = 2.0  # how long a one-shot sync looks for members on the LAN
# How often the daemon looks for attachment files edited in place. P2PSYNC_SCAN_SECONDS changes
# it (tests make it long, to show that a receive records local edits by itself).
SCAN_SECONDS = float(os.environ.get("P2PSYNC_SCAN_SECONDS") or 2.0)
_WILDCARDS = ("", "0.0.0.0", "::")

SyncResult = PeerSync | NetworkError


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    device: str | None = None  # the member expected there, when known
    also: tuple[str, ...] = ()  # other hosts of the same device (mDNS may announce several), tried in turn

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int, allow_any_port: bool = False) -> Address:
    """HOST:PORT (or HOST alone: the default port). Port 0 only where listening (any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not (0 if allow_any_port else 1) <= int(port) < 65536:
        raise InvalidValue(f"{text!r} is not an address; write HOST:PORT, e.g. 192.168.1.20:47625.")
    return Address(host, int(port))


def merge_targets(*groups: Iterable[Address]) -> list[Address]:
    """The addresses of all groups in order, each device and each HOST:PORT once (the first wins)."""
    out: list[Address] = []
    devices: set[str] = set()
    places: set[tuple[str, int]] = set()
    for group in groups:
        for address in group:
            if (address.device is not None and address.device in devices) or (address.host, address.port) in places:
                continue
            out.append(address)
            places.add((address.host, address.port))
            if address.device is not None:
                devices.add(address.device)
    return out


def announce_addresses(listen_host: str, interfaces: list[str] | None) -> list[str]:
    """The IPv4 addresses to announce for a server listening on listen_host: none if it cannot be
    told in IPv4 (a host name, an IPv6 address), or if it is loopback and the announcement would
    go out on other interfaces (no other machine could reach it there)."""
    if listen_host in _WILDCARDS:
        return list(interfaces) if interfaces else local_ipv4_addresses()
    try:
        address = ipaddress.IPv4Address(listen_host)
    except ValueError:
        return []
    if address.is_loopback and not (interfaces and all(ipaddress.IPv4Address(i).is_loopback for i in interfaces)):
        return []
    return [listen_host]


def _other_members(library: Library) -> list[str]:
    return [d["device_id"] for d in library.devices() if not d["revoked"] and not d["this_device"]]


def _members_seen(peers: dict[str, Peer], members: Iterable[str], me: str) -> dict[str, Address]:
    """Member device -> where the LAN says it is (all its announced hosts, the first tried first)."""
    out: dict[str, Address] = {}
    for device in members:
        peer = peers.get(device[:MDNS_ID_LENGTH])
        if peer is None or device == me:
            continue
        out[device] = Address(peer.addresses[0], peer.port, device, tuple(peer.addresses[1:]))
    return out


@dataclass
class _Attempt:
    where: tuple[tuple[str, ...], int]  # the announced hosts and port it was tried at
    ok: bool
    retry_at: float = 0.0
    backoff: float = LAN_RETRY_FIRST


class LanPresence:
    """A daemon on the LAN: announces this device and keeps track of members that appear."""

    def __init__(
        self,
        device_id: str,
        port: int,
        addresses: list[str],
        interfaces: list[str] | None,
        wake: Callable[[], None],
    ) -> None:
        self.device_id = device_id
        self.port = port
        self.addresses = addresses
        self.interfaces = interfaces
        self.dirty = True  # something changed that may make a member due (seen, or newly a member)
        self._wake = wake
        self._announcer: Announcer | None = None
        self._browser: Browser | None = None
        self._attempts: dict[str, _Attempt] = {}

    def _changed(self) -> None:
        self.dirty = True
        self._wake()

    async def start(self) -> None:
        """Announce and browse; a failure is logged in words and leaves the daemon without mDNS."""
        problems: list[str] = []
        if not self.addresses:
            log.warning("Not announcing this device on the LAN: it listens on no IPv4 address peers could use.")
        else:
            announcer = Announcer(self.device_id, self.port, self.addresses, self.interfaces)
            try:
                await announcer.start()
                self._announcer = announcer
            except DiscoveryError as exc:
                problems.append(exc.message)
        browser = Browser(self.interfaces, on_change=self._changed)
        try:
            await browser.start()
            self._browser = browser
        except DiscoveryError as exc:
            problems.append(exc.message)
        for message in dict.fromkeys(problems):  # the same cause usually stops both: say it once
            log.warning("%s Syncing goes on with the addresses given and those remembered.", message)
        if self._announcer is not None:
            where = ", ".join(f"{a}:{self.port}" for a in self.addresses)
            log.info("Announcing this device on the LAN at %s.", where)
        if self._browser is not None:
            log.info("Looking for this library's other devices on the LAN.")

    async def stop(self) -> None:
        announcer, browser = self._announcer, self._browser
        self._announcer = self._browser = None
        if announcer is not None:
            await announcer.stop()  # goodbyes: the others drop us at once
        if browser is not None:
            await browser.stop()

    def seen(self, members: Iterable[str]) -> dict[str, Address]:
        """Member device -> its address on the LAN, for the members seen now."""
        return {} if self._browser is None else _members_seen(self._browser.peers, members, self.device_id)

    def wants_look(self, now: float) -> bool:
        return self.dirty or any(not a.ok and now >= a.retry_at for a in self._attempts.values())

    def due(self, members: Iterable[str], now: float) -> list[Address]:
        """Members that appeared or moved since they were last tried, or whose retry time came."""
        self.dirty = False
        seen = self.seen(members)
        for device in [d for d in self._attempts if d not in seen]:
            del self._attempts[device]  # gone (or no longer a member): when it is back, it is new again
        due = []
        for device, address in seen.items():
            attempt = self._attempts.get(device)
            if attempt is None or attempt.where != _where(address) or (not attempt.ok and now >= attempt.retry_at):
                due.append(address)
        return due

    def record(self, address: Address, ok: bool, now: float) -> None:
        """What came of syncing with a member at its LAN address (failures are retried, backing off)."""
        if address.device is None:
            return
        previous = self._attempts.get(address.device)
        backoff = LAN_RETRY_FIRST
        if not ok and previous is not None and not previous.ok and previous.where == _where(address):
            backoff = min(previous.backoff * 2, LAN_RETRY_MAX)
        self._attempts[address.device] = _Attempt(_where(address), ok, now + backoff, backoff)


def _where(address: Address) -> tuple[tuple[str, ...], int]:
    return (address.host, *address.also), address.port


class Node:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.worker = LibraryWorker(self.path)
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None
        self._sync_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # the daemon loop looks at once (a member appeared)
        self._forwarding = False  # the daemon passes on changes that arrive (not a one-shot node)
        self._forward_at: float | None = None
        self._forward_first = 0.0
        self._lan: LanPresence | None = None
        self.last_fetch: FetchReport | None = None

    async def serve(self, host: str, port: int, setup: Callable[[web.Application], None] | None = None) -> int:
        """Start the peer server; returns the port it listens on. `setup` may add routes."""
        cert, key = await self.worker.call(
            lambda library: tls.certificate_files(library.identity(), self.worker.key_file, library.path)
        )
        app = make_app(self.worker, on_change=self._changes_arrived, setup=setup)
        # Behind the gate (net/gate.py): handshake and header deadlines, a cap on strangers.
        self._runner, self.port = await listen(app, host, port, tls.server_context(cert, key))
        self.host = host
        return self.port

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

    async def sync(self, addresses: Iterable[Address]) -> list[SyncResult]:
        """Sync with each address in turn (one sync at a time per node); failures are returned,
        already recorded for `status`, and do not stop the others. An address's `also` hosts are
        tried, in order, while the previous one is unreachable."""
        results: list[SyncResult] = []
        synced: dict[str, PeerSync] = {}  # a device reached once this call is not synced again
        async with self._sync_lock:
            for address in addresses:
                if address.device is not None and address.device in synced:
                    results.append(synced[address.device])  # the same object: callers can tell
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
                links[result.device] = Link(host, port, result.device)
        async with self._sync_lock:
            try:
                report = await fetch_attachments(
                    self.worker, list(links.values()), on_plan, on_bytes, unreachable=failed if not links else 0
                )
            except DiskFull as exc:  # filled up meanwhile (by something else): what arrived whole is kept
                report = FetchReport(disk_full=exc.message)
        self.last_fetch = report
        if report.disk_full:
            log.warning("Attachments: %s", report.disk_full)
        if report.files or report.missing:
            log.info(
                "attachments: %d files in (%.1f MB fetched, %.1f MB from this disk), %d still missing",
                report.files,
                report.bytes_fetched / 1e6,
                report.bytes_local / 1e6,
                len(report.missing),
            )
        return report

    async def known_addresses(self) -> list[Address]:
        """Remembered addresses of current members (other than this device)."""

        def collect(library: Library) -> list[Address]:
            members = set(_other_members(library))
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
        members = await self.worker.call(_other_members)
        wanted = [m for m in members if device is None or m == device]
        me = await self.worker.call(lambda library: library.device_id)
        if not wanted:
            return []
        peers = await browse_until(
            interfaces, lambda peers: len(_members_seen(peers, wanted, me)) == len(wanted), timeout
        )
        return list(_members_seen(peers, wanted, me).values())

    async def _targets(self, static: list[Address]) -> tuple[list[Address], list[Address]]:
        """Everyone to sync with in a full round: members seen on the LAN now (their freshest
        address, so tried first), the addresses given, then remembered addresses. Also returns
        the LAN ones."""
        lan: list[Address] = []
        if self._lan is not None:
            lan = list(self._lan.seen(await self.worker.call(_other_members)).values())
        return merge_targets(lan, static, await self.known_addresses()), lan

    async def run_daemon(
        self,
        stop: asyncio.Event,
        static: list[Address],
        interval: float,
        auto: bool = True,
        mdns: bool = False,
        mdns_interfaces: list[str] | None = None,
    ) -> None:
        """Sync on start, on the interval and on stop; with `auto` also on local changes, when a
        member appears on the LAN and after changes arrived from a peer. With `mdns`, announce this
        device and look for the others (call serve() first)."""
        loop = asyncio.get_running_loop()
        self._forwarding = auto
        if mdns:
            if self.port is None or self.host is None:
                raise RuntimeError("serve() before run_daemon(mdns=True): the announcement needs the port")
            me = await self.worker.call(lambda library: library.device_id)
            self._lan = LanPresence(
                me, self.port, announce_addresses(self.host, mdns_interfaces), mdns_interfaces, self._wake.set
            )
            await self._lan.start()
        try:
            await self._round(static)
            await self._relay_round()
            version = await self.worker.call(_data_version)
            known_foreign = await self.worker.call(_foreign_vector)
            next_interval = loop.time() + interval
            next_scan = loop.time() + SCAN_SECONDS
            while not stop.is_set():
                await self._pause(stop)
                if stop.is_set():
                    break
                now = loop.time()
                edited = False
                if now >= next_scan:  # PDFs annotated in place become new versions (store/library.py)
                    next_scan = now + SCAN_SECONDS
                    edited = bool(await self.worker.call(_scan_edits))
                current = await self.worker.call(_data_version)
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
                    await self._round(static)
                    if now >= next_interval:
                        await self._relay_round()  # the relay only on the interval, not on every edit
                        next_interval = now + interval
                elif auto and self._lan is not None and self._lan.wants_look(now):
                    await self._meet(self._lan)
            await self._round(static)  # a clean stop leaves nothing unsent
            await self._relay_round()
        finally:
            self._forwarding = False
            if self._lan is not None:
                lan, self._lan = self._lan, None
                await lan.stop()

    async def _relay_round(self) -> None:
        """Sync with the relay account, if this library is linked to one (protocol/relay.md).
        Errors are logged and recorded for `status`; they never stop the daemon. It runs on a
        connection of its own, on another thread, so the LAN peers are served meanwhile."""
        report = await asyncio.get_running_loop().run_in_executor(None, _sync_relay_at, self.path)
        if report is None:
            return
        if isinstance(report, P2PSyncError):
            log.warning("Relay: %s", report.message)
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
        due = lan.due(await self.worker.call(_other_members), asyncio.get_running_loop().time())
        for address in due:
            log.info("Device %s is on the LAN at %s.", (address.device or "")[:7], address)
            [result] = await self.sync([address])
            self._log(result)
            await self.fetch([result])
            lan.record(address, not isinstance(result, NetworkError), asyncio.get_running_loop().time())
            if isinstance(result, PeerSync) and result.received.applied:
                self._changes_arrived()

    async def _round(self, static: list[Address]) -> None:
        """Sync with every target; news pulled from one is passed on to the others soon after."""
        targets, lan = await self._targets(static)
        results = await self.sync(targets)
        await self.fetch(results)
        now = asyncio.get_running_loop().time()
        for address, result in zip(targets, results, strict=True):
            self._log(result)
            if self._lan is not None and address in lan:
                self._lan.record(address, not isinstance(result, NetworkError), now)
        # News from the second target on may be missing at those synced before it.
        if any(isinstance(r, PeerSync) and r.received.applied for r in results[1:]):
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
                result.sent.get("applied", 0),
            )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.worker.close()


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _sync_relay_at(path: Path) -> Any:
    """The relay round: None if the library is not linked, else the report or the error."""
    from p2psync.relay import link  # only a linked library needs the relay client

    try:
        with Library.open(path) as library:
            if not link.is_linked(library):
                return None
            return link.sync_with_relay(library)
    except P2PSyncError as exc:
        return exc


def _scan_edits(library: Library) -> int:
    """Attachment files changed in place since last looked at, now recorded as new versions."""
    return sum(1 for change in library.scan_attachments() if change["change"] == "modified")


def _foreign_vector(library: Library) -> dict[str, int]:
    """The version vector without this device: it changes when change sets from others arrive."""
    vector = version_vector(library)
    vector.pop(library.device_id, None)
    return vector


def _data_version(library: Library) -> Any:
    """Changes whenever another connection commits to the database (SQLite's data_version)."""
    return library.db.execute("PRAGMA data_version").fetchone()[0]
