"""A daemon on the LAN (mDNS): it announces this device, watches for the library's other
members, and says which of them are due a sync: those that appeared or moved, and those whose
last attempt failed, retried with a doubling back-off. mDNS records are untrusted: they only say
where to knock; who answers is settled by mutual TLS with the member's pinned key."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from p2psync.net.addresses import Address
from p2psync.net.discovery import MDNS_ID_LENGTH, Announcer, Browser, DiscoveryError, Peer
from p2psync.net.interfaces import local_ipv4_addresses

log = logging.getLogger("p2psync.node")
LAN_RETRY_FIRST = 2.0  # a member seen on the LAN that could not be synced is tried again after this...
LAN_RETRY_MAX = 60.0  # ...doubling up to this
_WILDCARDS = ("", "0.0.0.0", "::")


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


def members_seen(peers: dict[str, Peer], members: Iterable[str], me: str) -> dict[str, Address]:
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
        return {} if self._browser is None else members_seen(self._browser.peers, members, self.device_id)

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
