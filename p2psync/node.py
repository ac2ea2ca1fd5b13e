"""One running device: the library, its peer server, and (as a daemon) the automatic syncs.

The daemon syncs at start, within about a second of a change another process made to the
library (it watches SQLite's data_version), when a peer announces itself, on an interval, and once
more on a clean stop. Everything here is I/O wiring; the rules are in engine/ and store/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from p2psync.errors import InvalidValue, NetworkError, P2PSyncError
from p2psync.net import tls
from p2psync.net.client import PeerSync, sync_with_peer
from p2psync.net.server import make_app
from p2psync.net.worker import LibraryWorker
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.sync import unsealed_count

log = logging.getLogger("p2psync.node")
WATCH_SECONDS = 0.2  # how often the daemon looks for changes made by other processes


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    device: str | None = None  # the member expected there, when known

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


class Node:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.worker = LibraryWorker(self.path)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.changed = asyncio.Event()  # a peer pushed changes to us, or a local change was seen
        self._sync_lock = asyncio.Lock()

    async def serve(self, host: str, port: int, setup: Callable[[web.Application], None] | None = None) -> int:
        """Start the peer server; returns the port it listens on. `setup` may add routes."""
        cert, key = await self.worker.call(
            lambda library: tls.certificate_files(library.identity(), self.worker.key_file, library.path)
        )
        app = make_app(self.worker, setup=setup)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls.server_context(cert, key))
        try:
            await site.start()
        except OSError as exc:
            raise NetworkError(
                f"Cannot listen on {host}:{port} ({exc.strerror}); choose another with --listen HOST:PORT."
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def sync(self, addresses: Iterable[Address]) -> list[PeerSync | NetworkError]:
        """Sync with each address in turn (one sync at a time per node); failures are returned,
        already recorded for `status`, and do not stop the others."""
        results: list[PeerSync | NetworkError] = []
        async with self._sync_lock:
            for address in addresses:
                try:
                    results.append(
                        await sync_with_peer(self.worker, address.host, address.port, address.device, self.port)
                    )
                except NetworkError as exc:
                    results.append(exc)
        return results

    async def known_addresses(self) -> list[Address]:
        """Remembered addresses of current members (other than this device)."""

        def collect(library: Library) -> list[Address]:
            members = {d["device_id"] for d in library.devices() if not d["revoked"] and not d["this_device"]}
            out = []
            for device, text in peer_store.remembered_addresses(library).items():
                if device in members:
                    with contextlib.suppress(P2PSyncError):
                        out.append(Address(*_split(text), device=device))
            return out

        return await self.worker.call(collect)

    async def run_daemon(
        self, stop: asyncio.Event, static: list[Address], interval: float, auto: bool = True
    ) -> None:
        """Sync on start, on local changes (auto), on the interval, and on stop."""

        async def targets() -> list[Address]:
            known = await self.known_addresses()
            seen = {(a.host, a.port) for a in known}
            return known + [a for a in static if (a.host, a.port) not in seen]

        await self._sync_and_log(await targets())
        version = await self.worker.call(_data_version)
        next_interval = asyncio.get_running_loop().time() + interval
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)
            if stop.is_set():
                break
            now = asyncio.get_running_loop().time()
            current = await self.worker.call(_data_version)
            local_change = current != version
            version = current
            if (auto and local_change and await self.worker.call(unsealed_count) > 0) or now >= next_interval:
                await self._sync_and_log(await targets())
            if now >= next_interval:
                next_interval = now + interval
        await self._sync_and_log(await targets())  # a clean stop leaves nothing unsent

    async def _sync_and_log(self, addresses: list[Address]) -> None:
        for result in await self.sync(addresses):
            if isinstance(result, NetworkError):
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


def _data_version(library: Library) -> Any:
    """Changes whenever another connection commits to the database (SQLite's data_version)."""
    return library.db.execute("PRAGMA data_version").fetchone()[0]
