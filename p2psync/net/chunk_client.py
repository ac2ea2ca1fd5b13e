"""Asking a peer for chunks (POST /chunks, protocol/attachments.md section 4) on a plain blocking
TLS connection, from a thread.

Why not aiohttp, as for every other request: an answer of gigabytes read on the event loop costs
the loop a wake-up, a TLS read and a few Python calls per 16 KiB record, all on one core, with
the GIL held in between (profiled: most of the receiver's CPU). Here each request in flight has
its own thread that reads a megabyte at a time straight into one buffer (http.client undoes the
chunked encoding; ssl decrypts, hashlib hashes and os.pwrite writes without the GIL), so the
two cores share the work and Python runs a few times per megabyte, not per record.

Trust is the same as for aiohttp's requests: the TLS context of net/tls.py, and the server's
device key checked right after the handshake, before a byte of the request is sent.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Callable

from p2psync.engine.canonical import encode
from p2psync.errors import NetworkError
from p2psync.model.chunking import MAX_SIZE
from p2psync.net import tls
from p2psync.net.chunk_io import ChunkStream, Parsed
from p2psync.net.protocol import LIBRARY_HEADER, PREFIX, PROTOCOL_VERSION, VERSION_HEADER

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0  # seconds without a byte before the peer is said to have stopped answering
READ_BYTES = 1024 * 1024  # bytes read, then verified and written, at a time


class ChunkConnection:
    """One keep-alive connection to a peer, used by one request at a time (from a thread)."""

    def __init__(
        self, host: str, port: int, device: str, context: ssl.SSLContext, accept: Callable[[bytes], bool], library: str
    ) -> None:
        self.host, self.port, self.device = host, port, device
        self._context = context
        self._accept = accept
        self._headers = {
            VERSION_HEADER: str(PROTOCOL_VERSION),
            LIBRARY_HEADER: library,
            "Content-Type": "application/json",
        }
        self._conn: http.client.HTTPSConnection | None = None
        self.fallback_port: int | None = None  # where to go if `port` (a chunk listener) cannot be reached
        self._buffer = bytearray(READ_BYTES + MAX_SIZE + 4)  # (+ a chunk not yet whole)

    def _connect(self) -> http.client.HTTPSConnection:
        try:
            return self._connect_once()
        except (NetworkError, OSError):  # (refused, timed out, cut in the handshake: a firewall, a full listener)
            if self.fallback_port is None:
                raise
            self.port, self.fallback_port = self.fallback_port, None  # (for the rest of this connection's life)
            return self._connect_once()

    def _connect_once(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=CONNECT_TIMEOUT, context=self._context)
        try:
            conn.connect()
        except (ConnectionError, socket.gaierror, ssl.SSLError) as exc:
            conn.close()
            raise NetworkError(f"could not be reached ({getattr(exc, 'strerror', None) or exc})") from exc
        sock = conn.sock
        key = tls.peer_key(sock)
        if key is None or not self._accept(key):
            conn.close()
            raise NetworkError(f"The device at {self.host}:{self.port} is not {self.device[:7]}.")
        sock.settimeout(READ_TIMEOUT)
        return conn

    def fetch(self, names: list[str], stream: ChunkStream, on_batch: Callable[[Parsed], None]) -> None:
        """Ask for `names` and feed the answer to `stream`; on_batch is told what each batch
        brought (from this thread). Raises on a broken or malformed answer, after reporting
        what was written before it."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        view = memoryview(self._buffer)
        try:
            conn.request("POST", PREFIX + "/chunks", body=encode({"chunks": names}), headers=self._headers)
            response = conn.getresponse()
            if response.status >= 400:
                response.read(64 * 1024)
                raise NetworkError(f"The device {self.device[:7]} refused to send chunks ({response.status}).")
            filled = 0
            while True:
                got = response.readinto(view[filled : filled + READ_BYTES])
                filled += got
                if filled and (got == 0 or filled >= READ_BYTES):
                    parsed, used = stream.feed(view[:filled])
                    on_batch(parsed)
                    filled -= used
                    if filled:
                        view[:filled] = bytes(view[used : used + filled])  # a chunk not yet whole
                if got == 0:
                    break
            if not stream.complete or not response.isclosed():
                raise NetworkError(f"The device {self.device[:7]} sent an answer that ended too soon.")
        except http.client.HTTPException as exc:  # (IncompleteRead and the like: the stream broke off)
            self.close()
            raise ConnectionError("the connection broke off") from exc
        except BaseException:
            self.close()
            raise
        finally:
            view.release()

    def close(self) -> None:
        """Close the connection; from another thread, this wakes a read waiting on it."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
