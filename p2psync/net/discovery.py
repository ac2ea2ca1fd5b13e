"""LAN discovery over mDNS/DNS-SD (python-zeroconf, asyncio API).

A running device announces `_p2psync._tcp.local.` with a TXT record that carries only the protocol
version (`v`), a short device id (`id`, the first 8 characters of the device id) and, while
`p2psync pair` waits, the pairing nameplate (`pair`). Nothing about the library (name, size,
contents) is ever put on the wire here: anyone on the LAN can read these records.

The browser side keeps a live table of peers. Records from the network are untrusted: a service
whose TXT is malformed is ignored (never raises), exactly as python-zeroconf drops malformed packets.
Who a peer really is is settled later by mutual TLS with pinned keys, not by anything in mDNS.

Foreign exceptions (OSError, zeroconf.Error, ...) are translated into `DiscoveryError` here, at the
boundary, with a sentence the user can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zeroconf
from zeroconf import (
    DNSText,
    InterfaceChoice,
    InterfacesType,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2psync.errors import InvalidValue, NetworkError
from p2psync.model.devices import is_device_id

log = logging.getLogger(__name__)

SERVICE_TYPE = "_p2psync._tcp.local."
PROTOCOL_VERSION = 1
"""Equal to p2psync.net.protocol.PROTOCOL_VERSION (a test checks); not imported, since that module
pulls in the store and discovery runs in small processes too."""
MDNS_ID_LENGTH = 8
"""Characters of the device id put in TXT `id` and the instance name: enough to tell the devices of
one LAN apart (40 bits), not the full id (that is checked by TLS pinning, never by mDNS)."""

_SHORT_ID = re.compile(rf"[A-Z2-7]{{{MDNS_ID_LENGTH}}}")
_NUMBER = re.compile(r"[0-9]{1,9}")  # TXT numbers: plain decimal, bounded (no signs, spaces, 1e9...)
_RESOLVE_TIMEOUT_MS = 3000
_SERVICE_SUFFIX = "." + SERVICE_TYPE.lower()
_TYPE_TXT = 16  # DNS RR type TXT (RFC 1035)
_CLASS_IN = 1
_FALLBACK_HINT = "use --address HOST:PORT or --no-mdns."


class DiscoveryError(NetworkError):
    """mDNS could not be used here (no multicast-capable interface, socket refused, name taken)."""


@dataclass(frozen=True)
class Peer:
    """One p2psync service seen on the LAN: where to connect, and what it offers."""

    short_id: str
    addresses: tuple[str, ...]
    port: int
    version: int
    pairing: int | None


def instance_name(device_id: str) -> str:
    """The DNS-SD instance label for a device (no library information in it)."""
    return f"p2psync-{device_id[:MDNS_ID_LENGTH]}"


def _where(interfaces: list[str] | None) -> str:
    return ", ".join(interfaces) if interfaces else "all interfaces"


@contextlib.contextmanager
def _translated(interfaces: list[str] | None, doing: str = "could not start") -> Iterator[None]:
    """Turn the exceptions zeroconf and the socket layer raise into one DiscoveryError sentence."""
    try:
        yield
    except DiscoveryError:
        raise
    except zeroconf.NonUniqueNameException as exc:
        raise DiscoveryError(
            f"mDNS discovery {doing} on {_where(interfaces)} (another device on this network announces "
            f"the same short id); {_FALLBACK_HINT}"
        ) from exc
    except (OSError, ValueError, RuntimeError, zeroconf.Error) as exc:
        detail = str(exc) or type(exc).__name__
        raise DiscoveryError(f"mDNS discovery {doing} on {_where(interfaces)} ({detail}); {_FALLBACK_HINT}") from exc


def _check_ipv4(address: str, what: str) -> None:
    """InvalidValue unless `address` is a dotted IPv4 address; `what` says what it was for."""
    try:
        ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise InvalidValue(f"{address!r} is not an IPv4 address {what}; give one like 198.18.0.1.") from exc


def check_interfaces(interfaces: list[str] | None) -> list[str] | None:
    """Interfaces are IPv4 addresses to bind (None: zeroconf's default, every interface)."""
    if interfaces is None:
        return None
    if not interfaces:
        raise InvalidValue("mDNS needs at least one interface address to bind; give one or leave the default.")
    for address in interfaces:
        _check_ipv4(address, "to bind mDNS to")
    return list(interfaces)


async def _open_zeroconf(interfaces: list[str] | None) -> AsyncZeroconf:
    """A running AsyncZeroconf with at least one multicast sender, else DiscoveryError."""
    with _translated(interfaces):
        choice: InterfacesType = InterfaceChoice.All if interfaces is None else list(interfaces)
        zc = AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
    try:
        with _translated(interfaces):
            await zc.zeroconf.async_wait_for_start()
            if not zc.zeroconf.engine.senders:
                # zeroconf logs and skips interfaces it cannot join; with none left it would be silent.
                raise DiscoveryError(
                    f"mDNS discovery could not start on {_where(interfaces)} (no interface joined the mDNS "
                    f"multicast group); {_FALLBACK_HINT}"
                )
    except BaseException:
        await _close_quietly(zc)
        raise
    return zc


async def _close_quietly(zc: AsyncZeroconf) -> None:
    """Close without raising: used on the way out, where a second error would hide the first."""
    try:
        await zc.async_close()
    except Exception:  # shutting down: nothing useful to do with it
        log.debug("closing zeroconf failed", exc_info=True)


# --- announcing ---------------------------------------------------------------------------------


class Announcer:
    """Announces this device on the LAN so that paired peers (and a pairing partner) can find it."""

    def __init__(
        self,
        device_id: str,
        port: int,
        addresses: list[str],
        interfaces: list[str] | None,
        protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        if not is_device_id(device_id):
            raise InvalidValue(f"{device_id!r} is not a device id (32 characters of A-Z and 2-7).")
        if not 0 < port < 65536:
            raise InvalidValue(f"Port {port} is not a TCP port; give one between 1 and 65535.")
        if not addresses:
            raise InvalidValue("Give at least one IPv4 address the peer server can be reached at.")
        for address in addresses:
            _check_ipv4(address, "to announce")
        if not 0 < protocol_version < 10**9:
            raise InvalidValue(f"Protocol version {protocol_version} cannot be announced.")
        self.short_id = device_id[:MDNS_ID_LENGTH]
        self.port = port
        self.addresses = list(addresses)
        self.interfaces = check_interfaces(interfaces)
        self.protocol_version = protocol_version
        self._pairing: int | None = None
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def name(self) -> str:
        """The full DNS-SD service name this device announces."""
        return f"{instance_name(self.short_id)}.{SERVICE_TYPE}"

    def _service_info(self) -> AsyncServiceInfo:
        properties: dict[str, str] = {"v": str(self.protocol_version), "id": self.short_id}
        if self._pairing is not None:
            properties["pair"] = str(self._pairing)
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=self.port,
            properties=properties,
            server=f"{instance_name(self.short_id)}.local.",
            parsed_addresses=self.addresses,
        )

    async def start(self) -> None:
        """Probe for the name, register, and wait until the first announcements are sent."""
        if self._zc is not None:
            return
        zc = await _open_zeroconf(self.interfaces)
        info = self._service_info()
        try:
            with _translated(self.interfaces):
                announced = await zc.async_register_service(info)
                await announced
        except BaseException:
            await _close_quietly(zc)
            raise
        self._zc, self._info = zc, info

    async def set_pairing(self, nameplate: int | None) -> None:
        """Show (or, with None, withdraw) a pairing offer in TXT `pair`; updates a running announcement."""
        if nameplate is not None and not 0 <= nameplate < 10**9:
            raise InvalidValue(f"Nameplate {nameplate} cannot be announced; it must be 0 to 999999999.")
        if nameplate == self._pairing:
            return
        self._pairing = nameplate
        if self._zc is None:
            return  # start() will announce it
        info = self._service_info()
        with _translated(self.interfaces, "could not update the announcement"):
            sent = await self._zc.async_update_service(info)
            await sent
        self._info = info

    async def stop(self) -> None:
        """Send goodbyes (so browsers drop us at once) and close the sockets; safe to call twice."""
        zc, info = self._zc, self._info
        self._zc = self._info = None
        if zc is None:
            return
        try:
            if info is not None:
                goodbyes = await zc.async_unregister_service(info)
                await goodbyes
        except Exception:  # the goodbye is a courtesy; TTLs expire the records anyway
            log.debug("mDNS goodbye failed", exc_info=True)
        finally:
            await _close_quietly(zc)


# --- browsing -----------------------------------------------------------------------------------


def _txt_text(properties: dict[bytes, bytes | None], key: bytes) -> str | None:
    value = properties.get(key)
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def peer_from_info(info: ServiceInfo) -> Peer | None:
    """The Peer a resolved service describes, or None when anything in it is malformed."""
    return _peer_from(info.properties, info.port, tuple(info.parsed_addresses(IPVersion.V4Only)))


def _peer_from(properties: dict[bytes, bytes | None], port: int | None, addresses: tuple[str, ...]) -> Peer | None:
    version_text = _txt_text(properties, b"v")
    short_id = _txt_text(properties, b"id")
    if version_text is None or not _NUMBER.fullmatch(version_text) or int(version_text) < 1:
        return None
    if short_id is None or not _SHORT_ID.fullmatch(short_id):
        return None
    if port is None or not 0 < port < 65536:
        return None
    if not addresses:
        return None
    pair_text = _txt_text(properties, b"pair")
    # A bad `pair` value only means "no usable pairing offer"; the peer itself is still reachable.
    pairing = int(pair_text) if pair_text is not None and _NUMBER.fullmatch(pair_text) else None
    return Peer(short_id=short_id, addresses=addresses, port=port, version=int(version_text), pairing=pairing)


def _txt_properties(text: bytes) -> dict[bytes, bytes | None]:
    """Decode TXT rdata the way zeroconf does (first occurrence of a key wins, as RFC 6763 says)."""
    return ServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", properties=text).properties


def _freshest_txt(zc: Zeroconf, name: str) -> bytes | None:
    """The TXT rdata of `name` that the network said last.

    Why not ServiceInfo's own pick: when a TXT flips back to a value still in the cache (pairing
    offer withdrawn: the TXT before the offer comes back), zeroconf refreshes the old entry in place
    and may hand out the superseded one, which only expires a second later (RFC 6762 10.2). The
    current record is the one that lives longest.
    """
    now = current_time_millis()
    live = [r for r in zc.cache.async_all_by_details(name, _TYPE_TXT, _CLASS_IN) if not r.is_expired(now)]
    if not live:
        return None
    freshest = max(live, key=lambda r: r.created + r.ttl * 1000)
    return freshest.text if isinstance(freshest, DNSText) else None


class _TxtWatcher(RecordUpdateListener):
    """Sees every TXT answer, also those the cache already held (which fire no browser event)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.names: set[str] = set()

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type == _TYPE_TXT and record.name.lower().endswith(_SERVICE_SUFFIX):
                self.names.add(record.name)

    def async_update_records_complete(self) -> None:
        names, self.names = self.names, set()
        for name in names:
            self.browser._txt_seen(name)


class Browser:
    """Keeps `peers` up to date with the p2psync services on the LAN; `on_change` fires on every change."""

    def __init__(self, interfaces: list[str] | None, on_change: Callable[[], None] | None = None) -> None:
        self.interfaces = check_interfaces(interfaces)
        self.on_change = on_change
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._watcher = _TxtWatcher(self)
        self._known: dict[str, bytes | None] = {}  # service name -> the TXT last parsed (peer or not)
        self._by_name: dict[str, Peer] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}

    @property
    def peers(self) -> dict[str, Peer]:
        """The peers seen now, keyed by short id (a copy: safe to keep or iterate)."""
        return {peer.short_id: peer for peer in self._by_name.values()}

    async def start(self) -> None:
        """Open the sockets and start asking for `_p2psync._tcp`."""
        if self._zc is not None:
            return
        zc = await _open_zeroconf(self.interfaces)
        try:
            with _translated(self.interfaces):
                zc.zeroconf.async_add_listener(self._watcher, None)
                self._zc = zc
                self._browser = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change])
        except BaseException:
            self._zc = None
            await _close_quietly(zc)
            raise

    async def stop(self) -> None:
        """Stop browsing and close the sockets; safe to call twice."""
        zc, browser = self._zc, self._browser
        self._zc = self._browser = None
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        if zc is not None:
            with contextlib.suppress(Exception):
                zc.zeroconf.async_remove_listener(self._watcher)
            await _close_quietly(zc)

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's callback (on the event loop; keyword arguments, so these names are fixed)."""
        if state_change is ServiceStateChange.Removed:
            self._cancel(name)
            self._known.pop(name, None)
            if self._by_name.pop(name, None) is not None:
                self._notify()
            return
        self._known.setdefault(name, None)
        self._schedule(name)

    def _txt_seen(self, name: str) -> None:
        """A TXT answer arrived for a service we know: resolve again if it says something new."""
        zc = self._zc
        if zc is None or name not in self._known or name in self._resolving:
            return
        if _freshest_txt(zc.zeroconf, name) != self._known[name]:
            self._schedule(name)

    def _cancel(self, name: str) -> None:
        previous = self._resolving.pop(name, None)
        if previous is not None:
            previous.cancel()  # a newer event for the same name supersedes it

    def _schedule(self, name: str) -> None:
        self._cancel(name)
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(lambda done: self._forget(name, done))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]

    async def _resolve(self, name: str) -> None:
        zc = self._zc
        if zc is None:
            return
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            complete = await info.async_request(zc.zeroconf, _RESOLVE_TIMEOUT_MS)
            if not complete:
                return  # not answered in time: keep what we had; a later update or expiry settles it
            text = _freshest_txt(zc.zeroconf, name)
            properties = info.properties if text is None else _txt_properties(text)
            peer = _peer_from(properties, info.port, tuple(info.parsed_addresses(IPVersion.V4Only)))
        except asyncio.CancelledError:
            raise
        except Exception:  # a peer's records must never take the browser down
            log.debug("resolving %s failed", name, exc_info=True)
            return
        if name not in self._known:
            return  # removed while we were asking
        self._known[name] = text
        if peer is None:
            log.debug("ignoring %s: malformed p2psync TXT %r", name, properties)
            if self._by_name.pop(name, None) is not None:
                self._notify()
            return
        if self._by_name.get(name) != peer:
            self._by_name[name] = peer
            self._notify()

    def _notify(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            log.exception("mDNS on_change callback failed")


async def browse_until(
    interfaces: list[str] | None, enough: Callable[[dict[str, Peer]], bool], timeout: float
) -> dict[str, Peer]:
    """Browse until `enough(peers)` holds or `timeout` seconds pass; return the peers seen then."""
    found = asyncio.Event()
    browser: Browser

    def check() -> None:
        if enough(browser.peers):
            found.set()

    browser = Browser(interfaces, on_change=check)
    await browser.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(found.wait(), timeout)
        return browser.peers
    finally:
        await browser.stop()


async def find_pairing_offer(nameplate: int, interfaces: list[str] | None, timeout: float) -> Peer | None:
    """Browse until a peer offers pairing under `nameplate`, or `timeout` seconds pass (then None)."""

    def offer(peers: dict[str, Peer]) -> Peer | None:
        return next((peer for peer in peers.values() if peer.pairing == nameplate), None)

    return offer(await browse_until(interfaces, lambda peers: offer(peers) is not None, timeout))
