"""The chunk listener (net/chunk_server.py): /chunks served from threads on a port of its own,
with the peer server's trust and bounds. Real Node (in process), real TLS on 127.0.0.1, real
libraries and files; the clients here are plain blocking TLS sockets run off the event loop
(the server asks the library through it)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from p2psync.model.chunking import manifest_of
from p2psync.net import chunk_server, tls
from p2psync.net.chunk_io import LENGTH
from p2psync.net.protocol import LIBRARY_HEADER, MAX_JSON_BYTES, PREFIX, VERSION_HEADER
from p2psync.node import Address, Node
from p2psync.store.library import Library
from tests.sync_support import founded, joined

T = TypeVar("T")
SLACK = 3.0  # a deadline may fire this much late on a busy 2-core machine


@pytest.fixture
def libraries(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A (holding one 6 MB file) and B, members of one library; X, a stranger with a well-formed
    certificate of its own."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    source = tmp_path / "big.pdf"
    source.write_bytes(b"%PDF-1.7\n" + random.Random(5).randbytes(6_000_000))
    a.attach(a.add_reference({"title": "Big"}), source)
    a.close()
    b.close()
    Library.create(tmp_path / "x", "X").close()
    return tmp_path / "a", tmp_path / "b", tmp_path / "x"


def cert_of(path: Path) -> tuple[Path, Path]:
    with Library.open(path) as library:
        return tls.certificate_files(library.identity(), path / "device.key", path)


def library_id(path: Path) -> str:
    with Library.open(path) as library:
        return library.library_id


def names_of(tmp_path: Path) -> list[str]:
    return [digest for digest, _ in manifest_of(tmp_path / "big.pdf")["chunks"]]


def connect(port: int, cert: tuple[Path, Path] | None) -> ssl.SSLSocket:
    """A TLS connection to the chunk listener that trusts any server and shows `cert` (or none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(*cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw)


def request(names: list[str], library: str, version: str = "1", path: str = "/chunks") -> bytes:
    body = json.dumps({"chunks": names}).encode()
    return (
        f"POST {PREFIX}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{VERSION_HEADER}: {version}\r\n"
        f"{LIBRARY_HEADER}: {library}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_all(sock: ssl.SSLSocket, limit: float = 20.0) -> bytes:
    """Everything until the server closes (b'' at once if it closed without a byte)."""
    sock.settimeout(limit)
    out = b""
    try:
        while data := sock.recv(65536):
            out += data
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        pass
    return out


def read_answer(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """One answer (status, body with chunked coding undone), the connection left open."""
    sock.settimeout(20)
    handle = sock.makefile("rb")
    status = int(handle.readline().split()[1])
    headers = {}
    while (line := handle.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    if "content-length" in headers:
        return status, handle.read(int(headers["content-length"]))
    body = b""
    while size := int(handle.readline().strip(), 16):
        body += handle.read(size)
        handle.readline()
    handle.readline()
    return status, body


def records(body: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(body):
        (length,) = LENGTH.unpack_from(body, at)
        out.append(body[at + 4 : at + 4 + length])
        at += 4 + length
    return out


async def serving(path: Path) -> Node:
    node = Node(path)
    await node.serve("127.0.0.1", 0)
    assert node.chunk_server is not None
    return node


def in_thread(function: Callable[..., T], *args: Any) -> Awaitable[T]:
    return asyncio.to_thread(function, *args)


async def until(condition: Callable[[], bool], limit: float) -> float | None:
    """Seconds until `condition` holds (polled), or None if it did not within `limit`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    return None


# --- what members get ----------------------------------------------------------------------------


def test_a_sync_fetches_chunks_from_the_chunk_listener(libraries: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pa, pb, _ = libraries

    async def scenario() -> tuple[int, Any]:
        node = await serving(pa)
        client = Node(pb)
        try:
            results = await client.sync([Address("127.0.0.1", node.port or 0)])
            assert results[0].chunks_port == node.chunk_server.port  # type: ignore[union-attr]
            served_before = node.last_served
            fetched = await client.fetch(results)
            await asyncio.sleep(0.2)  # (the listener tells the loop of a request's end)
            # Its requests count as the server's, so that a waiting `sync --wait` lets them end.
            assert node.serving == 0 and node.last_served > served_before
            return node.chunk_server.answered, fetched  # type: ignore[union-attr]
        finally:
            await client.close()
            await node.close()

    answered, fetched = asyncio.run(scenario())
    assert fetched.files == 1 and fetched.bytes_fetched == 6_000_009
    assert answered >= 1  # every chunk came through the listener, none through the peer server
    with Library.open(pb) as b:
        [ref] = [r["id"] for r in b.list_references()]
        data = b.attachment_path(ref, "big.pdf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256((tmp_path / "big.pdf").read_bytes()).hexdigest()


def test_the_answer_is_the_chunks_asked_for_in_order_on_a_kept_alive_connection(
    libraries: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pa, pb, _ = libraries
    names = names_of(tmp_path)
    data = (tmp_path / "big.pdf").read_bytes()
    asked = [names[3], "0" * 64, names[0], names[3]]

    def client(port: int) -> list[list[bytes]]:
        with connect(port, cert_of(pb)) as sock:
            got = []
            for wanted in (asked, names[:512]):  # two requests, one connection
                sock.sendall(request(wanted, library_id(pa)))
                status, body = read_answer(sock)
                assert status == 200
                got.append(records(body))
            return got

    async def scenario() -> list[list[bytes]]:
        node = await serving(pa)
        try:
            return await in_thread(client, node.chunk_server.port)  # type: ignore[union-attr]
        finally:
            await node.close()

    first, second = asyncio.run(scenario())
    assert [hashlib.sha256(r).hexdigest() if r else None for r in first] == [names[3], None, names[0], names[3]]
    assert b"".join(second) == data[: sum(len(r) for r in second)] and len(second) == min(512, len(names))


def test_the_peer_server_still_answers_chunks_and_a_fetch_falls_back_to_it(
    libraries: tuple[Path, Path, Path],
) -> None:
    """A peer that cannot reach the listener (a firewall, a full listener) fetches from the port it
    synced with."""
    pa, pb, _ = libraries

    async def scenario() -> tuple[Any, int]:
        node = await serving(pa)
        client = Node(pb)
        try:
            results = await client.sync([Address("127.0.0.1", node.port or 0)])
            listener = node.chunk_server
            assert listener is not None
            await in_thread(listener.close)  # nothing listens on the port it told any more
            fetched = await client.fetch(results)
            return fetched, listener.answered
        finally:
            await client.close()
            await node.close()

    fetched, answered = asyncio.run(scenario())
    assert fetched.files == 1 and fetched.missing == [] and answered == 0


# --- who gets nothing ----------------------------------------------------------------------------


def test_a_stranger_or_a_client_without_a_certificate_gets_not_a_byte(
    libraries: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pa, _, px = libraries
    names = names_of(tmp_path)[:4]

    def stranger(port: int) -> bytes:
        with connect(port, cert_of(px)) as sock:
            try:
                sock.sendall(request(names, library_id(pa)))
            except OSError:
                return b""
            return read_all(sock)

    def anonymous(port: int) -> str:
        try:
            with connect(port, None) as sock:
                sock.sendall(request(names, library_id(pa)))
                return "answered: " + repr(read_all(sock)[:40])
        except (ssl.SSLError, OSError) as exc:
            return type(exc).__name__

    async def scenario() -> tuple[bytes, str, int]:
        node = await serving(pa)
        try:
            port = node.chunk_server.port  # type: ignore[union-attr]
            return await in_thread(stranger, port), await in_thread(anonymous, port), node.chunk_server.answered  # type: ignore[union-attr]
        finally:
            await node.close()

    got, anonymous_outcome, answered = asyncio.run(scenario())
    assert got == b""
    assert not anonymous_outcome.startswith("answered: b'H"), anonymous_outcome
    assert answered == 0


def test_a_removed_device_is_refused_at_its_next_request_and_connection(
    libraries: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pa, pb, _ = libraries
    names = names_of(tmp_path)[:2]
    with Library.open(pb) as b:
        b_short = b.device_id[:7]

    def scenario_in_thread(port: int) -> tuple[int, int, dict[str, Any], bytes]:
        with connect(port, cert_of(pb)) as sock:
            sock.sendall(request(names, library_id(pa)))
            before, _ = read_answer(sock)
            with Library.open(pa) as a:
                a.revoke_device(b_short)
            sock.sendall(request(names, library_id(pa)))  # the same kept-alive connection
            after, body = read_answer(sock)
            closed = read_all(sock, 5.0)
        with connect(port, cert_of(pb)) as sock:  # a new connection
            try:
                sock.sendall(request(names, library_id(pa)))
                fresh = read_all(sock)
            except OSError:
                fresh = b""
        return before, after, json.loads(body), closed + fresh

    async def scenario() -> tuple[int, int, dict[str, Any], bytes]:
        node = await serving(pa)
        try:
            return await in_thread(scenario_in_thread, node.chunk_server.port)  # type: ignore[union-attr]
        finally:
            await node.close()

    before, after, error, rest = asyncio.run(scenario())
    assert (before, after, error["error"]) == (200, 403, "not_member")
    assert rest == b""


# --- refused requests close the connection -------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["too_large", "no_length", "not_json", "too_many", "bad_name", "version", "library", "path", "method", "head"],
)
def test_a_bad_request_is_refused_and_the_connection_closed(
    libraries: tuple[Path, Path, Path], tmp_path: Path, case: str
) -> None:
    pa, pb, _ = libraries
    lib = library_id(pa)
    names = names_of(tmp_path)[:2]
    head = f"Host: 127.0.0.1\r\n{VERSION_HEADER}: 1\r\n{LIBRARY_HEADER}: {lib}\r\n"
    wire = {
        "too_large": f"POST {PREFIX}/chunks HTTP/1.1\r\n{head}Content-Length: {MAX_JSON_BYTES + 1}\r\n\r\n{{".encode(),
        "no_length": f"POST {PREFIX}/chunks HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n".encode(),
        "not_json": f"POST {PREFIX}/chunks HTTP/1.1\r\n{head}Content-Length: 4\r\n\r\n[1, ".encode(),
        "too_many": request(names[:1] * 513, lib),
        "bad_name": request([names[0].upper()], lib),
        "version": request(names, lib, version="99"),
        "library": request(names, "0" * 16),
        "path": request(names, lib, path="/pull"),
        "method": request(names, lib).replace(b"POST ", b"PUT ", 1),
        "head": f"POST {PREFIX}/chunks HTTP/1.1\r\n{head}X-Long: {'a' * 5000}\r\n\r\n".encode(),
    }[case]
    expected = {
        "too_large": (413, "too_large"),
        "no_length": (413, "too_large"),
        "not_json": (400, "malformed"),
        "too_many": (400, "malformed"),
        "bad_name": (400, "malformed"),
        "version": (400, "protocol"),
        "library": (409, "library"),
        "path": (404, "not_found"),
        "method": (405, "method"),
        "head": (400, "malformed"),
    }[case]

    def client(port: int) -> tuple[int, str, bytes]:
        with connect(port, cert_of(pb)) as sock:
            sock.sendall(wire)
            status, body = read_answer(sock)
            return status, json.loads(body)["error"], read_all(sock, 5.0)

    async def scenario() -> tuple[tuple[int, str, bytes], int]:
        node = await serving(pa)
        try:
            outcome = await in_thread(client, node.chunk_server.port)  # type: ignore[union-attr]
            await until(lambda: node.chunk_server.connections == 0, 5.0)  # type: ignore[union-attr]
            return outcome, node.chunk_server.connections  # type: ignore[union-attr]
        finally:
            await node.close()

    (status, code, after), held = asyncio.run(scenario())
    assert (status, code) == expected
    assert after == b"" and held == 0  # closed: nothing more, no thread kept


# --- slow, silent and departing clients ----------------------------------------------------------


def test_a_client_that_stops_reading_is_dropped_after_the_send_deadline(
    libraries: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_server, "SEND_SECONDS", 1.0)
    pa, pb, _ = libraries
    names = names_of(tmp_path)[:512]

    async def scenario() -> float | None:
        node = await serving(pa)
        listener = node.chunk_server
        assert listener is not None
        sock = await in_thread(connect, listener.port, cert_of(pb))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await in_thread(sock.sendall, request(names, library_id(pa)))  # then never read
            assert await until(lambda: listener.connections == 1, 5.0) is not None
            return await until(lambda: listener.connections == 0, 1.0 + SLACK + 5.0)
        finally:
            sock.close()
            await node.close()

    dropped_after = asyncio.run(scenario())
    assert dropped_after is not None and dropped_after < 1.0 + SLACK + 5.0


def test_silent_connections_are_closed_at_the_handshake_and_idle_deadlines(
    libraries: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_server, "HANDSHAKE_SECONDS", 1.0)
    monkeypatch.setattr(chunk_server, "IDLE_SECONDS", 1.0)
    pa, pb, _ = libraries

    async def scenario() -> tuple[float | None, float | None]:
        node = await serving(pa)
        listener = node.chunk_server
        assert listener is not None
        silent = socket.create_connection(("127.0.0.1", listener.port))  # TCP only, no handshake
        try:
            handshake = await until(lambda: listener.connections == 0, 1.0 + SLACK)
            member = await in_thread(connect, listener.port, cert_of(pb))  # handshake, then nothing
            idle = await until(lambda: listener.connections == 0, 1.0 + SLACK + 1.0)
            member.close()
            return handshake, idle
        finally:
            silent.close()
            await node.close()

    handshake, idle = asyncio.run(scenario())
    assert handshake is not None and idle is not None


def test_strangers_beyond_the_cap_make_room_for_a_member(
    libraries: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_server, "MAX_CONNECTIONS", 4)
    pa, pb, _ = libraries
    names = names_of(tmp_path)[:2]

    def member(port: int) -> int:
        with connect(port, cert_of(pb)) as sock:
            sock.sendall(request(names, library_id(pa)))
            return read_answer(sock)[0]

    async def scenario() -> tuple[int, int]:
        node = await serving(pa)
        listener = node.chunk_server
        assert listener is not None
        held = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(6)]  # never shake hands
        try:
            await until(lambda: listener.connections == 4, 5.0)
            status = await in_thread(member, listener.port)
            return status, listener.connections
        finally:
            for sock in held:
                sock.close()
            await node.close()

    status, held = asyncio.run(scenario())
    assert status == 200 and held <= 4


def test_a_client_that_cuts_the_answer_leaves_the_listener_serving(
    libraries: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pa, pb, _ = libraries
    names = names_of(tmp_path)[:512]

    def cut_then_ask(port: int) -> tuple[int, int]:
        for _ in range(3):
            sock = connect(port, cert_of(pb))
            sock.sendall(request(names, library_id(pa)))
            sock.recv(100_000)  # a little of the answer, then gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # (a reset)
        with connect(port, cert_of(pb)) as sock:
            sock.sendall(request(names[:3], library_id(pa)))
            status, body = read_answer(sock)
            return status, len(records(body))

    async def scenario() -> tuple[tuple[int, int], float | None]:
        node = await serving(pa)
        listener = node.chunk_server
        assert listener is not None
        try:
            outcome = await in_thread(cut_then_ask, listener.port)
            return outcome, await until(lambda: listener.connections == 0, 5.0 + SLACK)
        finally:
            await node.close()

    (status, count), gone = asyncio.run(scenario())
    assert (status, count) == (200, 3) and gone is not None


# --- the protocol's vectors ----------------------------------------------------------------------


def test_the_listener_answers_every_request_case_of_the_vectors(tmp_path: Path) -> None:
    """attachments.md §8 against the chunk listener, as test_vectors does against the peer server
    (aiohttp's client, as a second implementation would ask)."""
    import aiohttp

    from tests.test_vectors import CHUNKING, expected_response, request_body
    from tests.test_vectors import records as vector_records

    held = {name: bytes.fromhex(data) for name, data in CHUNKING["server_chunks"].items()}
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Holds the vector chunks"})
    for name, data in held.items():
        source = tmp_path / f"{name[:8]}.bin"
        source.write_bytes(data)
        a.attach(ref, source)
    server_key, lib = a.identity().public_bytes, a.library_id
    cert, key = tls.certificate_files(b.identity(), tmp_path / "b" / "device.key", tmp_path / "b")
    a.close()
    b.close()

    async def ask() -> dict[str, Any]:
        server = await serving(tmp_path / "a")
        url = f"https://127.0.0.1:{server.chunk_server.port}{PREFIX}/chunks"  # type: ignore[union-attr]
        context = tls.client_context(cert, key, lambda shown: shown == server_key)
        headers = {VERSION_HEADER: "1", LIBRARY_HEADER: lib, "Content-Type": "application/json"}
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                for case in CHUNKING["requests"]:
                    async with session.post(url, data=request_body(case), headers=headers) as r:
                        out[case["name"]] = (r.status, r.headers.get("Content-Type", ""), await r.read())
                async with session.get(url, headers=headers) as r:
                    out["GET"] = (r.status, await r.read())
        finally:
            await server.close()
        return out

    answers = asyncio.run(ask())
    for case in CHUNKING["requests"]:
        status, content_type, body = answers[case["name"]]
        assert status == case["status"], case["name"]
        if status == 200:
            assert content_type == "application/x-p2psync-chunks", case["name"]
            assert body == expected_response(case), case["name"]
            names = json.loads(request_body(case))["chunks"]
            assert vector_records(body) == [held.get(name) for name in names], case["name"]
        else:
            assert content_type.startswith("application/json"), case["name"]
            assert json.loads(body)["error"] == case["error"], case["name"]
    assert (answers["GET"][0], json.loads(answers["GET"][1])["error"]) == (405, "method")
