"""Asking a peer for chunks (POST /chunks, protocol/attachments.md section 4) on a plain blocking
TLS connection, from a thread.

Why not aiohttp, as for every other request: an answer of gigabytes read on the event loop costs
the loop a wake-up, a TLS read and a few Python calls per 16 KiB record, all on one core, with
the GIL held in between (profiled: most of the receiver's CPU). Here each request in flight has
its own thread that reads a megabyte at a time straight into one buffer (net/tls_pipe.py reads
the socket many TLS records at a time and undoes the chunked coding; ssl decrypts, hashlib
hashes and os.pwrite writes without the GIL), so the two cores share the work.

Trust is the same as for aiohttp's requests: the TLS context of net/tls.py, and the server's
device key checked right after the handshake, before a byte of the request is sent.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from p2psync.engine.canonical import encode
from p2psync.errors import NetworkError
from p2psync.model.chunking import MAX_SIZE
from p2psync.net import tls
from p2psync.net.chunk_io import ChunkStream, Parsed
from p2psync.net.protocol import LIBRARY_HEADER, PREFIX, PROTOCOL_VERSION, VERSION_HEADER
from p2psync.net.tls_pipe import Answer, TLSPipe

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
        self._pipe: TLSPipe | None = None
        self.fallback_port: int | None = None  # where to go if `port` (a chunk listener) cannot be reached
        self._buffer = bytearray(READ_BYTES + MAX_SIZE + 4)  # (+ a chunk not yet whole)

    def _connect(self) -> TLSPipe:
        try:
            return self._connect_once()
        except (NetworkError, OSError):  # (refused, timed out, cut in the handshake: a firewall, a full listener)
            if self.fallback_port is None:
                raise
            self.port, self.fallback_port = self.fallback_port, None  # (for the rest of this connection's life)
            return self._connect_once()

    def _connect_once(self) -> TLSPipe:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except (ConnectionError, socket.gaierror) as exc:
            raise NetworkError(f"could not be reached ({getattr(exc, 'strerror', None) or exc})") from exc
        pipe = TLSPipe(sock, self._context)
        try:
            pipe.handshake()
        except ssl.SSLError as exc:
            pipe.close()
            if getattr(self._context, "p2psync_refused", None) is not None:  # (its key, refused in the handshake)
                raise NetworkError(f"The device at {self.host}:{self.port} is not {self.device[:7]}.") from None
            raise NetworkError(f"could not be reached ({exc})") from exc
        except BaseException:
            pipe.close()
            raise
        key = tls.peer_key(pipe.ssl)
        if key is None or not self._accept(key):
            pipe.close()
            raise NetworkError(f"The device at {self.host}:{self.port} is not {self.device[:7]}.")
        sock.settimeout(READ_TIMEOUT)
        return pipe

    def _request(self, names: list[str]) -> bytes:
        body = encode({"chunks": names})
        host = f"[{self.host}]" if ":" in self.host else self.host
        head = f"POST {PREFIX}/chunks HTTP/1.1\r\nHost: {host}:{self.port}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in self._headers.items()
        )
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body

    def fetch(self, names: list[str], stream: ChunkStream, on_batch: Callable[[Parsed], None]) -> None:
        """Ask for `names` and feed the answer to `stream`; on_batch is told what each batch
        brought (from this thread). Raises on a broken or malformed answer, after reporting
        what was written before it."""
        if self._pipe is None:
            self._pipe = self._connect()
        pipe = self._pipe
        view = memoryview(self._buffer)
        try:
            pipe.send(self._request(names))
            answer = Answer(pipe)
            if answer.status >= 400:
                raise NetworkError(f"The device {self.device[:7]} refused to send chunks ({answer.status}).")
            filled = 0
            while not answer.done:
                filled += answer.read_into(view[filled : filled + READ_BYTES])
                if filled and (answer.done or filled >= READ_BYTES):
                    parsed, used = stream.feed(view[:filled])
                    on_batch(parsed)
                    filled -= used
                    if filled:
                        view[:filled] = bytes(view[used : used + filled])  # a chunk not yet whole
            if not stream.complete:
                raise NetworkError(f"The device {self.device[:7]} sent an answer that ended too soon.")
            if not answer.keep_alive:
                self.close()
        except BaseException:
            self.close()
            raise
        finally:
            view.release()

    def close(self) -> None:
        """Close the connection; from another thread, this wakes a read waiting on it."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()
