"""The peer server's door: every TCP connection passes here before aiohttp sees it.

The peer server listens on the LAN, open to anyone. Without this gate a connection that never
finished its TLS handshake, or that sent half a request head, held a file descriptor for an hour
(aiohttp's keep-alive); about a thousand of them exhausted the process and members' syncs timed
out. Now each connection moves like this:

1. Accepted as plain TCP by a `Door` and counted as *unverified*. When unverified connections
   are more than the cap, the oldest one of the address holding most of them is dropped (never
   the one just accepted): a flood pushes out its own connections first, and a member's new
   connection, arriving after them, survives it.
2. The TLS handshake (loop.start_tls), which must end within HANDSHAKE_SECONDS.
3. The peer key: a member's key (as the server's checks last saw the membership) makes it a
   *member's* connection, no longer counted and never capped. Anything else stays unverified.
4. aiohttp's request handler takes over the TLS connection. While no request is being answered,
   a connection has a deadline: its first request head must be whole HEADERS_SECONDS after the
   handshake, and a later one HEADERS_SECONDS after its first byte (bytes trickling in do not
   extend it); a kept-alive connection may wait IDLE_SECONDS for that first byte.

The server's checks (server.py) tell the gate when a request starts and ends and whether its key
is a member's, since membership changes while the server runs (a pairing adds a member, a
revocation removes one).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from p2psync.net.tls import peer_key

try:
    import resource
except ImportError:  # (Windows has none: the cap is then UNVERIFIED_MAX)
    resource = None  # type: ignore[assignment]

log = logging.getLogger("p2psync.server")

# The limits, and why these values (protocol/transport.md section 4 lists them):
# A TLS 1.3 handshake is one round trip and two Ed25519 signatures: milliseconds on a LAN, well
# under a second on a poor Wi-Fi link. The client gives up connecting after 5 s (CONNECT_TIMEOUT),
# so waiting longer here serves nobody.
HANDSHAKE_SECONDS = 5.0
# A client writes its request head (under 1 KB) in one piece as soon as it may: right after the
# handshake, or as it starts a request on a kept-alive connection.
HEADERS_SECONDS = 5.0
# Longer than aiohttp's client keeps an idle connection for reuse (15 s): a server that closes a
# kept-alive connection first may close it under a request being sent, which then fails.
IDLE_SECONDS = 20.0
# Strangers' connections held at once. Honest ones are few (a pairing joiner, a version probe).
# With the deadlines above a flood must keep opening connections to hold 128 (25 a second if
# half-done, 6 a second if idle after a request), and past 128 its own oldest ones go first.
UNVERIFIED_MAX = 128
# ...and never more than a quarter of the process's file descriptors (RLIMIT_NOFILE, often
# 1024), so the members' connections, the library and its attachments always find some.
FD_SHARE = 4
# A request head of this protocol is under a dozen short fields; these bound what a half-sent
# head may make the server keep (32 lines of 4 KB) at 128 KB per connection.
MAX_HEAD_LINE = 4096
MAX_HEAD_FIELDS = 32
HANDLER_LIMITS: dict[str, Any] = {
    "keepalive_timeout": IDLE_SECONDS,
    "max_line_size": MAX_HEAD_LINE,
    "max_field_size": MAX_HEAD_LINE,
    "max_headers": MAX_HEAD_FIELDS,
}
_WARN_EVERY = 60.0  # the log says at most this often that connections are being dropped


def unverified_cap(fd_limit: int | None = None) -> int:
    """How many unverified connections this process holds at once (fd_limit: RLIMIT_NOFILE's soft
    limit, this process's by default)."""
    if fd_limit is None:
        if resource is None:
            return UNVERIFIED_MAX
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == getattr(resource, "RLIM_INFINITY", -1) or fd_limit < 0:
        return UNVERIFIED_MAX
    return max(8, min(UNVERIFIED_MAX, fd_limit // FD_SHARE))


def address_key(peername: Any) -> str:
    """Whose connection this is, for fairness: the IPv4 address, or the IPv6 /64 (one host may
    use a whole /64)."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername)
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Gate:
    """Counts the connections of one listening server, drops strangers' beyond the cap and
    closes those that overstay their deadline."""

    def __init__(self, context: ssl.SSLContext, cap: int) -> None:
        self.context = context
        self.cap = cap
        self.handlers: Callable[[], asyncio.Protocol] | None = None  # aiohttp's handler factory
        self.members: frozenset[bytes] = frozenset()  # member keys, this device's excepted
        self._unverified: dict[Door, None] = {}  # oldest first
        self._by_address: dict[str, dict[Door, None]] = {}  # the same, per address
        self._doors: set[Door] = set()
        self._by_transport: dict[asyncio.BaseTransport, Door] = {}  # TLS transport -> its door
        self._warned = -_WARN_EVERY
        self._dropped_since_warning = 0

    def __call__(self) -> Door:
        """The protocol factory for loop.create_server."""
        return Door(self)

    # --- the server's checks tell the gate about requests ---

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        door = self._by_transport.get(transport) if transport is not None else None
        if door is not None:
            door.active += 1
            door.stop_clock()
            door.head_started = False

    def request_ended(self, transport: asyncio.BaseTransport | None) -> None:
        door = self._by_transport.get(transport) if transport is not None else None
        if door is not None:
            door.active -= 1
            if door.active == 0:
                door.start_clock(IDLE_SECONDS)  # kept alive, waiting for the next request

    def verified(self, transport: asyncio.BaseTransport | None, member: bool) -> None:
        """A request's key proved a member's (or did not): the connection counts accordingly."""
        door = self._by_transport.get(transport) if transport is not None else None
        if door is not None and not door.closed and door.member != member:
            door.member = member
            if member:
                self._uncount(door)
            else:
                self._count(door)

    # --- the doors ---

    def admit(self, door: Door) -> None:
        self._doors.add(door)
        self._count(door)

    def handed_over(self, door: Door, transport: asyncio.BaseTransport, member: bool) -> None:
        self._by_transport[transport] = door
        self.verified(transport, member)

    def forget(self, door: Door) -> None:
        self._doors.discard(door)
        self._uncount(door)
        if door.tls is not None:
            self._by_transport.pop(door.tls, None)

    def close_all(self) -> None:
        """Drop every connection not yet handed to aiohttp (the runner shuts down the others)."""
        for door in list(self._doors):
            if door.handler is None:
                door.abort()

    def _count(self, door: Door) -> None:
        self._unverified[door] = None
        self._by_address.setdefault(door.address, {})[door] = None
        while len(self._unverified) > self.cap:
            victim = self._victim(spare=door)
            if victim is None:
                break
            self._dropped_since_warning += 1
            victim.abort()
        self._maybe_warn()

    def _uncount(self, door: Door) -> None:
        self._unverified.pop(door, None)
        doors = self._by_address.get(door.address)
        if doors is not None:
            doors.pop(door, None)
            if not doors:
                del self._by_address[door.address]

    def _victim(self, spare: Door) -> Door | None:
        """The oldest unverified connection of the address holding most (not `spare`)."""
        for _, doors in sorted(self._by_address.items(), key=lambda item: -len(item[1])):
            for door in doors:
                if door is not spare:
                    return door
        return None

    def _maybe_warn(self) -> None:
        if not self._dropped_since_warning:
            return
        now = asyncio.get_running_loop().time()
        if now - self._warned >= _WARN_EVERY:
            log.warning(
                "%d connections without a member's certificate were dropped (at most %d are kept); "
                "something on the network may be flooding this device's port",
                self._dropped_since_warning,
                self.cap,
            )
            self._warned, self._dropped_since_warning = now, 0


class Door(asyncio.Protocol):
    """One connection from accept to close: the TCP connection's protocol until the handshake
    starts, then the TLS transport's, handing everything on to aiohttp's handler."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.address = ""
        self.raw: asyncio.Transport | None = None
        self.tls: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self.member = False
        self.active = 0  # requests being answered
        self.head_started = False  # bytes of a request head have come since the last answer
        self.closed = False
        self._clock: asyncio.TimerHandle | None = None
        self._early: list[bytes] = []  # arrived between the handshake and the handover
        self._early_eof = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        transport.pause_reading()  # nothing is read before start_tls installs TLS
        self.address = address_key(transport.get_extra_info("peername"))
        self.gate.admit(self)
        if not self.closed:  # (the cap may have dropped it at once)
            self._task = asyncio.get_running_loop().create_task(self._handshake())

    async def _handshake(self) -> None:
        if self.closed or self.raw is None:  # dropped before the handshake began
            return
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.raw,
                self,
                self.gate.context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_SECONDS,
                ssl_shutdown_timeout=HANDSHAKE_SECONDS,  # a TLS close is one message each way too
            )
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:  # too slow, refused, cut or dropped: start_tls has closed the connection
            transport = None
        if transport is None or self.closed or self.gate.handlers is None:
            self.abort()
            return
        self.tls = transport
        key = peer_key(transport.get_extra_info("ssl_object"))
        self.gate.handed_over(self, transport, key is not None and key in self.gate.members)
        if self.closed:  # (dropped for the cap)
            return
        handler = self.handler = self.gate.handlers()
        handler.connection_made(transport)
        for data in self._early:
            handler.data_received(data)
        self._early = []
        if self._early_eof:
            handler.eof_received()
        if self.active == 0:
            self.head_started = True
            self.start_clock(HEADERS_SECONDS)  # the first request comes right after the handshake

    def abort(self) -> None:
        transport = self.tls or self.raw
        if transport is not None:
            transport.abort()
        self._gone(None)

    # --- the deadline while no request is being answered ---

    def start_clock(self, seconds: float) -> None:
        self.stop_clock()
        if not self.closed:
            self._clock = asyncio.get_running_loop().call_later(seconds, self._expired)

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _expired(self) -> None:
        self._clock = None
        if self.active == 0:
            self.abort()

    # --- protocol events, handed on once aiohttp has the connection ---

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            if self.active == 0 and not self.head_started:  # a request begins: its head is due
                self.head_started = True
                self.start_clock(HEADERS_SECONDS)
            self.handler.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return self.handler.eof_received()
        self._early_eof = True
        return None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        handler = self.handler
        self._gone(exc)
        if handler is not None:
            self.handler = None
            handler.connection_lost(exc)

    def _gone(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_clock()
        self.gate.forget(self)  # (a handshake under way fails now: its transport is closed)


class GatedSite(web.BaseSite):
    """An aiohttp site whose connections come through a Gate (TLS included)."""

    __slots__ = ("_gate", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, gate: Gate, host: str, port: int) -> None:
        super().__init__(runner)
        self._gate = gate
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        self._gate.handlers = self._runner.server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._gate, self._host or None, self._port, backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        self._gate.close_all()
