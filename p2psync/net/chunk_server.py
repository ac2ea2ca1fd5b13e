"""Attachment chunks (POST /p2psync/v1/chunks) served from threads, on a listener of its own
(protocol/attachments.md section 4.4; its port travels in the /vv answer as `chunks_port`).

Why not the aiohttp server: there one event-loop thread encrypts and sends every answer on every
connection, with a few copies of each batch on the way (profiled: the sender's busiest thread).
Here each connection has a thread and a blocking TLS socket, and a batch of chunks goes from the
files (os.preadv) into one buffer kept by the connection and out through ssl's sendall: both let
go of the GIL, so several answers use both cores, and nothing is copied in Python.

Trust and bounds are those of the peer server (net/server.py, net/gate.py):
- TLS 1.3 with a client certificate required; right after the handshake the client's key must be
  a current member's (not this device's), or the connection is closed before a byte is read or
  sent. Every request is checked again (version, membership, library) as server.checks does.
- At most MAX_CONNECTIONS connections (one thread each); past that a new one pushes out the oldest
  that has not yet proved a member's key, or is closed at once if there is none.
- Deadlines, enforced by one watchdog thread that cuts the connection: the handshake, a request
  head (from its first byte) and body, a kept-alive connection waiting for its next request, and
  every send (a client that stops reading is dropped SEND_SECONDS after its last progress).
- Heads and bodies are bounded as the peer server bounds them; any refusal is answered with the
  JSON error body of transport.md section 3.4 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from p2psync.engine.canonical import encode, loads
from p2psync.engine.protocol_version import speaks
from p2psync.errors import P2PSyncError
from p2psync.net.chunk_io import frame_chunks, frame_into, framed_size
from p2psync.net.chunk_serving import MALFORMED, chunk_names, cut_batches
from p2psync.net.gate import HANDSHAKE_SECONDS, HEADERS_SECONDS, IDLE_SECONDS, MAX_HEAD_FIELDS, MAX_HEAD_LINE
from p2psync.net.protocol import (
    LIBRARY_HEADER,
    MAX_JSON_BYTES,
    PREFIX,
    SUPPORTED_VERSIONS,
    VERSION_HEADER,
    error_body,
)
from p2psync.net.tls import peer_key
from p2psync.net.worker import LibraryWorker
from p2psync.store import transfers
from p2psync.store.library import Library
from p2psync.store.peers import member_keys

log = logging.getLogger("p2psync.server")
T = TypeVar("T")

MAX_CONNECTIONS = 32  # a fetching member opens 4 (chunks.PARALLEL_PER_PEER): room for 8 at once
SEND_SECONDS = 20.0  # as long as a fetcher waits for a byte (chunk_client.READ_TIMEOUT)
BODY_SECONDS = HEADERS_SECONDS  # a body of at most MAX_JSON_BYTES, sent right after its head
CALL_SECONDS = 30.0  # a question to the library's thread (it may be busy with a large receive)
WATCH_EVERY = 0.25  # how often the watchdog looks at the deadlines
SEND_BATCH = 1024 * 1024  # chunks read and sent at a time: each connection keeps a buffer this big
SEND_PIECE = 256 * 1024  # a client must take this much within SEND_SECONDS
_HEAD_ROOM = 128  # bytes kept in front of a batch for the response head and the chunk-size line
_MAX_HEAD = MAX_HEAD_LINE * (MAX_HEAD_FIELDS + 1)
_RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-p2psync-chunks\r\nTransfer-Encoding: chunked\r\n\r\n"
_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}
_REASONS |= {413: "Request Entity Too Large", 500: "Internal Server Error"}


class _Refused(Exception):
    """A request answered with an error status (the connection is closed after it)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(code, message, **extra)


class _Gone(Exception):
    """The client closed the connection, or it was cut (deadline, shutdown)."""


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


class _Connection:
    """One accepted connection: its socket (TLS once the handshake starts) and its deadline."""

    def __init__(self, raw: socket.socket) -> None:
        self.sock: socket.socket = raw
        self.member = False  # proved a member's key
        self.deadline: float | None = time.monotonic() + HANDSHAKE_SECONDS
        self.cut = False
        self.pending = bytearray()  # bytes read past the current request's head
        self.buffer = bytearray()  # the batch being sent, kept for the next one

    def cut_off(self) -> None:
        """Wake the connection's thread out of any read or write (from another thread)."""
        self.cut = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # (not SSLSocket.shutdown: it drops the TLS state)

    def recv_some(self) -> bytes:
        try:
            data = self.sock.recv(64 * 1024)
        except (OSError, ssl.SSLError) as exc:
            raise _Gone from exc
        if not data or self.cut:
            raise _Gone
        return data


class ChunkServer:
    """The chunk listener of one running device; start() from the event loop that runs `worker`."""

    def __init__(
        self, worker: LibraryWorker, context: ssl.SSLContext, on_request: Callable[[bool], None] | None = None
    ) -> None:
        self._worker = worker
        self._context = context
        self._on_request = on_request  # told on the event loop as each request starts (True) and ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: dict[_Connection, threading.Thread] = {}  # oldest first
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.answered = 0  # requests answered with chunks (for `status`-like checks and tests)

    @property
    def connections(self) -> int:
        """Connections held now (each with its thread)."""
        with self._lock:
            return len(self._connections)

    # --- start and stop ---

    def start(self, host: str) -> int:
        """Listen on host (any free port); returns the port."""
        self._loop = asyncio.get_running_loop()
        self._listener = _listen(host)
        self.port = int(self._listener.getsockname()[1])
        for target, name in ((self._accept_loop, "accept"), (self._watch, "watch")):
            thread = threading.Thread(target=target, name=f"p2psync-chunk-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.port

    def close(self) -> None:
        """Stop listening and cut every connection; returns once their threads have ended (bounded)."""
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            self._listener.close()
        with self._lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            connection.cut_off()
        deadline = time.monotonic() + 5.0
        for thread in [t for _, t in connections] + self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- accepting, the cap, the deadlines ---

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.05)  # (out of file descriptors, say: try again shortly)
                continue
            self._admit(raw)

    def _admit(self, raw: socket.socket) -> None:
        connection = _Connection(raw)
        with self._lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                victim = next((c for c in self._connections if not c.member), None)
                if victim is None:  # all members' (still busy): this one must wait for the peer server
                    raw.close()
                    return
                victim.cut_off()
                del self._connections[victim]  # (its thread still ends on its own)
            thread = threading.Thread(target=self._serve, args=(connection,), name="p2psync-chunk-serve", daemon=True)
            self._connections[connection] = thread
        try:
            thread.start()
        except RuntimeError:  # (no thread to be had: the process is at its limit) refused, not fatal
            with self._lock:
                self._connections.pop(connection, None)
            raw.close()

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_EVERY):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._connections if c.deadline is not None and c.deadline < now]
            for connection in late:
                connection.cut_off()

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run function(library, *args) on the library's thread (as everything that reads it)."""
        assert self._loop is not None
        try:
            future = asyncio.run_coroutine_threadsafe(self._worker.call(function, *args), self._loop)
        except RuntimeError:  # the event loop has stopped: the device is shutting down
            raise _Gone from None
        try:
            return future.result(CALL_SECONDS)
        except P2PSyncError as exc:
            raise _Refused(500, "failed", exc.message) from None

    # --- one connection ---

    def _serve(self, connection: _Connection) -> None:
        try:
            self._handshake(connection)
            while not self._closing.is_set():
                connection.deadline = time.monotonic() + IDLE_SECONDS
                try:
                    self._answer(connection)
                except _Refused as refused:
                    connection.deadline = time.monotonic() + SEND_SECONDS
                    body = encode(refused.body)
                    head = (
                        f"HTTP/1.1 {refused.status} {_REASONS.get(refused.status, 'Error')}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    )
                    connection.sock.sendall(head.encode("ascii") + body)
                    return
        except (_Gone, OSError, ssl.SSLError):  # the client left, was cut off, or failed its handshake
            pass
        except Exception:
            log.exception("unexpected error serving chunks")
        finally:
            with self._lock:
                if self._connections.get(connection) is threading.current_thread():
                    del self._connections[connection]
            connection.sock.close()

    def _handshake(self, connection: _Connection) -> None:
        connection.sock.settimeout(HANDSHAKE_SECONDS)
        sock = self._context.wrap_socket(connection.sock, server_side=True, do_handshake_on_connect=False)
        connection.sock = sock
        sock.do_handshake()
        key = peer_key(sock)
        if key is None or not self._call(_is_member, key):
            raise _Gone  # nothing read, nothing sent
        connection.member = True
        sock.settimeout(SEND_SECONDS + 5.0)  # (the watchdog cuts first; this only backs it up)

    def _answer(self, connection: _Connection) -> None:
        """Read one request and answer it (raises _Gone when the client is done)."""
        request = self._read_head(connection)
        self._tell(True)
        try:
            self._check_and_answer(connection, request)
        finally:
            self._tell(False)

    def _tell(self, started: bool) -> None:
        if self._on_request is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # (the loop has closed)
                self._loop.call_soon_threadsafe(self._on_request, started)

    def _check_and_answer(self, connection: _Connection, request: _Request) -> None:
        version = request.headers.get(VERSION_HEADER.lower(), "").strip()
        if not speaks(version, SUPPORTED_VERSIONS):
            raise _Refused(
                400,
                "protocol",
                f"The device you reached speaks p2psync protocol {', '.join(map(str, SUPPORTED_VERSIONS))}; "
                f"the request used {version or 'none'}. Update p2psync on the older machine.",
                supported=list(SUPPORTED_VERSIONS),
            )
        key = peer_key(connection.sock)
        if request.path != PREFIX + "/chunks" or request.method != "POST":
            self._check_member(request, self._call(_library_if_member, key))
            if request.path != PREFIX + "/chunks":
                raise _Refused(404, "not_found", f"There is no {request.path} here.")
            raise _Refused(405, "method", f"{request.method} is not allowed on {request.path}.")
        # The body is read before the membership check is repeated (the handshake proved a member's
        # key), so that the check and the chunks' places take one trip to the library's thread.
        wanted = _wanted(self._read_body(connection, request))
        library_id, locations = self._call(_plan, key, wanted)
        self._check_member(request, library_id)
        if isinstance(wanted, _Refused):
            raise wanted
        self._send_chunks(connection, locations)
        with self._lock:
            self.answered += 1

    @staticmethod
    def _check_member(request: _Request, library_id: str | None) -> None:
        if library_id is None:
            raise _Refused(403, "not_member", "This device is not a member of the library here; pair it first.")
        if request.headers.get(LIBRARY_HEADER.lower()) != library_id:
            raise _Refused(409, "library", "This device syncs a different library.")

    def _read_head(self, connection: _Connection) -> _Request:
        pending = connection.pending
        while not pending:
            pending += connection.recv_some()
        connection.deadline = time.monotonic() + HEADERS_SECONDS  # the whole head, from its first byte
        while (end := pending.find(b"\r\n\r\n")) < 0:
            if len(pending) > _MAX_HEAD:
                raise _Refused(400, "malformed", "The request head is too long.")
            pending += connection.recv_some()
        head = bytes(pending[:end])
        del pending[: end + 4]
        lines = head.split(b"\r\n")
        if len(lines) - 1 > MAX_HEAD_FIELDS or any(len(line) > MAX_HEAD_LINE for line in lines):
            raise _Refused(400, "malformed", "The request head is too long.")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep or not name or name != name.strip():
                    raise ValueError(line)
                headers[name.lower()] = value.strip()
        except ValueError:
            raise _Refused(400, "malformed", "The request head is not HTTP/1.1.") from None
        if version != "HTTP/1.1":
            raise _Refused(400, "malformed", "The request head is not HTTP/1.1.")
        return _Request(method, target.partition("?")[0], headers)

    def _read_body(self, connection: _Connection, request: _Request) -> bytes:
        length = request.headers.get("content-length", "")
        if "transfer-encoding" in request.headers or not length.isdigit() or int(length) > MAX_JSON_BYTES:
            raise _Refused(413, "too_large", f"A request body is at most {MAX_JSON_BYTES} bytes of JSON.")
        size = int(length)
        connection.deadline = time.monotonic() + BODY_SECONDS
        pending = connection.pending
        while len(pending) < size:
            pending += connection.recv_some()
        body = bytes(pending[:size])
        del pending[:size]
        return body

    def _send_chunks(self, connection: _Connection, locations: list[transfers.Location | None]) -> None:
        """The answer of attachments.md 4.2, in batches of about SEND_BATCH, each one HTTP chunk:
        the response head, or the chunk-size line, is written in the room kept in front of it, and
        the end mark after the last, so that each batch leaves in one sendall."""
        batches = cut_batches(locations, SEND_BATCH)
        if not batches:
            batches = [[]]
        prefix = _RESPONSE_HEAD
        for i, batch in enumerate(batches):
            need = _HEAD_ROOM + framed_size(batch) + 7
            if len(connection.buffer) < need:
                connection.buffer = bytearray(max(need, _HEAD_ROOM + SEND_BATCH + 4096))
            buffer = connection.buffer
            end = frame_into(buffer, _HEAD_ROOM, batch)
            if end is None:  # a file shrank while being read: chunk by chunk, into the buffer
                data = frame_chunks(batch)
                end = _HEAD_ROOM + len(data)
                buffer[_HEAD_ROOM:end] = data
            size = end - _HEAD_ROOM
            last = i == len(batches) - 1
            line = prefix + (b"%x\r\n" % size if size else b"")
            tail = (b"\r\n" if size else b"") + (b"0\r\n\r\n" if last else b"")
            start = _HEAD_ROOM - len(line)
            buffer[start:_HEAD_ROOM] = line
            buffer[end : end + len(tail)] = tail
            with memoryview(buffer) as view:
                for at in range(start, end + len(tail), SEND_PIECE):
                    connection.deadline = time.monotonic() + SEND_SECONDS  # from the last progress
                    connection.sock.sendall(view[at : min(at + SEND_PIECE, end + len(tail))])
            prefix = b""


def _listen(host: str) -> socket.socket:
    """A listening socket on `host` (every address if empty, as the peer server), any free port."""
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64)
        return socket.create_server(("", 0), backlog=64)
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, 0), family=family, backlog=64)


def _is_member(library: Library, key: bytes) -> bool:
    return _library_if_member(library, key) is not None


def _library_if_member(library: Library, key: bytes | None) -> str | None:
    """The library's id if `key` is a current member's other than this device's, else None."""
    members = member_keys(library)
    if key is None or key not in members or members[key] == library.device_id:
        return None
    return library.library_id


def _plan(
    library: Library, key: bytes | None, wanted: list[str] | _Refused
) -> tuple[str | None, list[transfers.Location | None]]:
    """The library's id if `key` is a current member's (else None), and where each chunk asked
    for is (nothing for a non-member or a refused body)."""
    library_id = _library_if_member(library, key)
    if library_id is None or isinstance(wanted, _Refused):
        return library_id, []
    return library_id, transfers.locate(library, wanted)


def _wanted(body: bytes) -> list[str] | _Refused:
    """The chunk names of a request body (attachments.md 4.1), or its refusal (raised after the
    membership check)."""
    try:
        value = loads(body)
    except ValueError:
        return _Refused(400, "malformed", "The request body is not JSON.")
    wanted = chunk_names(value)
    if wanted is None:
        return _Refused(400, "malformed", MALFORMED)
    return wanted


def server_context(cert_file: Any, key_file: Any) -> ssl.SSLContext:
    """The peer server's TLS context (net/tls.py), with a client certificate required: nothing
    here is for a device that is not a member."""
    from p2psync.net import tls

    context = tls.server_context(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context
