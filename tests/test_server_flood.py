"""Strangers cannot starve the peer server (issue 18, item 3), over real TLS on 127.0.0.1.

The attacker is this test process: it opens connections that never finish the TLS handshake
(silent, or half a ClientHello), TLS connections without a certificate or with a non-member's
that send half a request head (all at once or a byte at a time), and kept-alive connections
after one request. The server is a real Node (in process) or a real daemon process whose
file-descriptor limit is lowered, so that the flood would exhaust it without the gate. Every
flood is bounded in count and in time, and stays on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.net import tls
from p2psync.net.client import PeerSync
from p2psync.net.gate import HANDSHAKE_SECONDS, HEADERS_SECONDS, IDLE_SECONDS, address_key, unverified_cap
from p2psync.net.protocol import LIBRARY_HEADER, PREFIX, VERSION_HEADER
from p2psync.node import Address, Node
from p2psync.store.library import Library
from tests.support import process_alive
from tests.sync_support import founded, joined

HALF_HEAD = b"POST " + PREFIX.encode() + b"/vv HTTP/1.1\r\nHost: 127.0.0.1\r\nP2PSync-Protocol: 1\r\n"
HELLO = b"GET /p2psync/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SLACK = 3.0  # a deadline may fire this much late on a busy 2-core machine
AT_ONCE = 20  # a flood opens this many connections together
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def libraries(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A and B, members of one library, and X, a stranger with a well-formed certificate."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    a.add_reference({"title": "Written on A during the flood"})
    a.close()
    b.close()
    Library.create(tmp_path / "x", "X").close()
    return tmp_path / "a", tmp_path / "b", tmp_path / "x"


def cert_of(path: Path) -> tuple[Path, Path]:
    with Library.open(path) as library:
        return tls.certificate_files(library.identity(), path / "device.key", path)


def client_context(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    """A client that trusts any server and shows `cert` (or no certificate at all)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def half_client_hello() -> bytes:
    """The first half of a real TLS ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    handshake = client_context(None).wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        handshake.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


async def open_tls(port: int, cert: tuple[Path, Path] | None, source: str = "127.0.0.1") -> Stream:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(cert), server_hostname="", local_addr=(source, 0)
        ),
        5.0,
    )


async def open_tcp(port: int, source: str = "127.0.0.1") -> Stream:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 5.0)


async def seconds_until_closed(reader: asyncio.StreamReader, limit: float) -> float | None:
    """How long until the server closes the connection (None: still open after `limit`)."""
    start = time.monotonic()

    async def drain() -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while await reader.read(65536):
                pass

    try:
        await asyncio.wait_for(drain(), limit)
    except TimeoutError:
        return None
    return time.monotonic() - start


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.transport.abort()


async def serving(path: Path) -> Node:
    node = Node(path)
    await node.serve("127.0.0.1", 0)
    return node


@pytest.mark.slow
def test_unfinished_handshakes_half_requests_and_idle_strangers_are_closed_at_their_deadlines(
    libraries: tuple[Path, Path, Path],
) -> None:
    pa, _, px = libraries
    stranger = cert_of(px)

    async def scenario() -> dict[str, float | None]:
        node = await serving(pa)
        port = node.port or 0
        tricklers: list[asyncio.Task[None]] = []
        opened: list[Stream] = []

        async def trickle(writer: asyncio.StreamWriter, after: float) -> None:  # slowloris
            await asyncio.sleep(after)
            with contextlib.suppress(OSError, ssl.SSLError):
                for byte in HALF_HEAD * 10:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.3)

        try:
            silent = await open_tcp(port)  # connects and says nothing
            half_hello = await open_tcp(port)
            half_hello[1].write(half_client_hello())
            no_cert = await open_tls(port, None)
            no_cert[1].write(HALF_HEAD)
            non_member = await open_tls(port, stranger)
            non_member[1].write(HALF_HEAD)
            slow = await open_tls(port, None)  # a byte of the head every 0.3 s from the start
            tricklers.append(asyncio.create_task(trickle(slow[1], 0.0)))
            idle = await open_tls(port, None)  # one whole request, then kept alive and idle
            idle[1].write(HELLO)
            slow_later = await open_tls(port, None)  # one whole request; a second, slowly, after 1 s
            slow_later[1].write(HELLO)
            tricklers.append(asyncio.create_task(trickle(slow_later[1], 1.0)))
            opened = [silent, half_hello, no_cert, non_member, slow, idle, slow_later]
            names = ["silent", "half_hello", "no_cert", "non_member", "slowloris", "idle", "slow_later"]
            waits = [seconds_until_closed(reader, IDLE_SECONDS + SLACK) for reader, _ in opened]
            return dict(zip(names, await asyncio.gather(*waits), strict=True))
        finally:
            for task in tricklers:
                task.cancel()
            close_all(opened)
            await node.close()

    closed = asyncio.run(scenario())
    expected = {"silent": HANDSHAKE_SECONDS, "half_hello": HANDSHAKE_SECONDS, "idle": IDLE_SECONDS}
    expected |= {name: HEADERS_SECONDS for name in ("no_cert", "non_member", "slowloris")}
    expected["slow_later"] = 1.0 + HEADERS_SECONDS  # the head is due 5 s after its first byte
    for name, seconds in expected.items():
        after = closed[name]
        assert after is not None and seconds - 1 < after < seconds + SLACK, (name, closed)


def test_a_flood_from_one_address_pushes_out_its_own_connections_first(
    libraries: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Three times the cap of silent connections from 127.0.0.2: the server drops the flood's
    oldest at once (so it never holds more than the cap), and a stranger from another address
    that is in the middle of its own business (a device about to pair) is served throughout."""
    pa, _, _ = libraries
    cap = unverified_cap()

    async def scenario() -> tuple[list[float | None], list[bytes]]:
        node = await serving(pa)
        port = node.port or 0
        held: list[Stream] = []
        other = await open_tls(port, None, "127.0.0.3")
        answers: list[bytes] = []

        async def keep_asking() -> None:  # a request a second, as a pairing run would
            try:
                while True:
                    other[1].write(HELLO)
                    head = await asyncio.wait_for(other[0].readuntil(b"\r\n\r\n"), 5.0)
                    answers.append(head.split(b"\r\n", 1)[0])
                    await other[0].readexactly(34)  # {"p2psync": true, "versions": [1]}
                    await asyncio.sleep(1.0)
            except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
                answers.append(f"failed: {exc!r}".encode())

        asking = asyncio.create_task(keep_asking())
        try:
            while len(held) < 3 * cap:
                held.extend(await asyncio.gather(*(open_tcp(port, "127.0.0.2") for _ in range(AT_ONCE))))
            closed = await asyncio.gather(*(seconds_until_closed(reader, 1.0) for reader, _ in held))
            await asyncio.sleep(1.0)
            return list(closed), answers
        finally:
            asking.cancel()
            close_all([*held, other])
            await node.close()

    with caplog.at_level(logging.WARNING, logger="p2psync.server"):
        closed, answers = asyncio.run(scenario())
    flood = len(closed)
    assert sum(seconds is not None for seconds in closed) >= flood - cap, closed
    assert len(answers) >= 2 and set(answers) == {b"HTTP/1.1 200 OK"}, answers
    assert any("dropped" in r.getMessage() for r in caplog.records), caplog.text


def test_fairness_counts_an_ipv6_host_by_its_64_and_the_cap_follows_the_descriptor_limit() -> None:
    assert address_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert address_key(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"  # a dual-stack listener
    one = address_key(("2001:db8:1:2::1", 5000, 0, 0))
    assert one == address_key(("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert one != address_key(("2001:db8:1:3::1", 5000, 0, 0))
    assert unverified_cap(1024) == 128 and unverified_cap(256) == 64 and unverified_cap(20) == 8


# --- a flood against a daemon whose descriptors are few ---------------------------------------

P2PSYNC = [sys.executable, "-m", "p2psync"]
FD_LIMIT = 256  # the daemon's RLIMIT_NOFILE in the flood test (a desktop's default is 1024)
FLOOD = 600  # connections the attacker opens, at most...
FLOOD_SECONDS = 20.0  # ...and for at most this long


def start_limited_daemon(library: Path) -> tuple[subprocess.Popen[str], int]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    proc = subprocess.Popen(
        [*P2PSYNC, "daemon", "--library", str(library), "--listen", "127.0.0.1:0", "--json", "--no-mdns"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"daemon did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(json.loads(line)["listening"].rsplit(":", 1)[1])


@contextlib.contextmanager
def descriptors_for_the_attacker(needed: int) -> Iterator[None]:
    """This process holds the flood's sockets: make sure it may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the test process may open only {hard} files; the flood needs {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def flood(port: int, stranger: tuple[Path, Path], held: list[Stream], stop_at: float) -> int:
    """Open up to FLOOD unauthenticated connections, AT_ONCE at a time, from the member's address and
    from another; returns how many the server let through the TCP connect."""
    hello_half = half_client_hello()
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        source = ("127.0.0.1", "127.0.0.2")[(i // 4) % 2]
        try:
            match i % 4:
                case 0:
                    stream = await open_tcp(port, source)
                case 1:
                    stream = await open_tcp(port, source)
                    stream[1].write(hello_half)
                case 2:
                    stream = await open_tls(port, None, source)
                    stream[1].write(HALF_HEAD)
                case _:
                    stream = await open_tls(port, stranger, source)
                    stream[1].write(HALF_HEAD)
        except (OSError, ssl.SSLError, TimeoutError):
            failed += 1
            return
        held.append(stream)

    for start in range(0, FLOOD, AT_ONCE):
        if time.monotonic() > stop_at:
            break
        await asyncio.gather(*(one(i) for i in range(start, min(start + AT_ONCE, FLOOD))))
    return len(held)


async def member_connection(port: int, member: tuple[Path, Path], library_id: str) -> Stream:
    stream = await open_tls(port, member)
    await answered(stream, library_id)
    return stream


async def answered(stream: Stream, library_id: str) -> bytes:
    """Send one member request on a kept-alive connection; the status line of the answer."""
    reader, writer = stream
    body = b'{"vv":{}}'
    writer.write(
        b"POST "
        + PREFIX.encode()
        + b"/vv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"{VERSION_HEADER}: 1\r\n{LIBRARY_HEADER}: {library_id}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 10.0)
    return head.split(b"\r\n", 1)[0]


async def status_or_error(stream: Stream, library_id: str) -> str:
    try:
        return (await answered(stream, library_id)).decode()
    except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__


@pytest.mark.slow
def test_a_flood_of_strangers_leaves_members_served(libraries: tuple[Path, Path, Path]) -> None:
    """Hundreds of half-open unauthenticated connections against a daemon limited to 256 file
    descriptors: it holds no more than its cap of them, a member's sync still completes within
    a few seconds, and a member's own connections, more than the cap, are all still served."""
    pa, pb, px = libraries
    stranger, member = cert_of(px), cert_of(pb)
    with Library.open(pa) as a:
        library_id = a.library_id
    cap = unverified_cap(FD_LIMIT)
    daemon, port = start_limited_daemon(pa)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        held: list[Stream] = []
        members: list[Stream] = []
        peak = 0
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, open_descriptors(daemon.pid))
                await asyncio.sleep(0.05)

        baseline = open_descriptors(daemon.pid)
        sampler = asyncio.create_task(sample())
        client = Node(pb)
        try:
            # A member keeps more connections open than strangers may: members are not capped.
            members = [await member_connection(port, member, library_id) for _ in range(cap + 16)]
            flooding = asyncio.create_task(flood(port, stranger, held, time.monotonic() + FLOOD_SECONDS))
            while len(held) < FLOOD // 2 and not flooding.done():
                await asyncio.sleep(0.05)
            out["held_at_sync"] = len(held)
            start = time.monotonic()
            try:
                [result] = await asyncio.wait_for(client.sync([Address("127.0.0.1", port)]), 20.0)
            except TimeoutError:
                result = None
            out["sync"] = result
            out["sync_seconds"] = time.monotonic() - start
            out["flooded"] = await flooding
            out["members_served"] = await asyncio.gather(*(status_or_error(s, library_id) for s in members))
        finally:
            sampling = False
            await sampler
            close_all(held + members)
            await client.close()
        out["baseline"], out["peak"] = baseline, peak
        return out

    errors = ""
    try:
        with descriptors_for_the_attacker(2 * FLOOD + 2 * cap + 256):
            out = asyncio.run(scenario())
        assert process_alive(daemon.pid)
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            errors = daemon.communicate(timeout=20)[1]
        if daemon.returncode is None:
            daemon.kill()
            daemon.wait()
    assert isinstance(out["sync"], PeerSync), out
    assert out["sync"].received.applied >= 1
    assert out["sync_seconds"] < 5.0, out
    assert out["held_at_sync"] >= FLOOD // 2, out  # (the sync ran while the flood held hundreds)
    assert out["members_served"] == ["HTTP/1.1 200 OK"] * (cap + 16), out
    # Descriptors: the members' connections, at most `cap` strangers', the sync's, and one batch
    # of the flood in flight (accepted and not yet counted, or dropped and not yet closed).
    assert out["peak"] <= out["baseline"] + (cap + 16) + cap + 2 * AT_ONCE + 8, out
    assert "Too many open files" not in errors and "out of system resource" not in errors, errors[-2000:]
    with Library.open(pb) as b:
        assert "Written on A during the flood" in {r["title"] for r in b.list_references()}


# --- the /chunks client that leaves ------------------------------------------------------------


def test_a_chunks_client_that_disconnects_leaves_no_traceback(
    libraries: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from p2psync.model.chunking import manifest_of

    pa, pb, _ = libraries
    source = tmp_path / "big.pdf"
    source.write_bytes(b"%PDF-1.7\n" + random.Random(3).randbytes(24_000_000))
    with Library.open(pa) as a:
        a.attach(a.add_reference({"title": "Big"}), source)
        library_id = a.library_id
    names = [digest for digest, _ in manifest_of(source)["chunks"]][:512]
    member = cert_of(pb)
    body = json.dumps({"chunks": names}).encode()

    async def scenario() -> int:
        node = await serving(pa)
        try:
            got = 0
            for _ in range(3):
                reader, writer = await open_tls(node.port or 0, member)
                writer.write(
                    b"POST "
                    + PREFIX.encode()
                    + b"/chunks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + f"{VERSION_HEADER}: 1\r\n{LIBRARY_HEADER}: {library_id}\r\n".encode()
                    + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                got += len(await reader.readexactly(300_000))  # some of the answer, then leave
                writer.transport.abort()
            await asyncio.sleep(1.5)  # the server finds out as it writes the rest
            return got
        finally:
            await node.close()

    with caplog.at_level(logging.DEBUG):
        got = asyncio.run(scenario())
    assert got == 900_000
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), [r.getMessage() for r in caplog.records]
