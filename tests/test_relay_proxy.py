"""The relay client honours the machine's network settings: HTTPS_PROXY and NO_PROXY, and the CA
that $SSL_CERT_FILE names (issue 23, point 11).

A real relay process serves TLS with a certificate for relay.p2psync.test signed by a test CA; a
real CONNECT proxy on 127.0.0.1 (below) records what it is asked for and tunnels every name to
127.0.0.1. The name resolves nowhere else, so only a client that goes through the proxy reaches the
relay; and only a client that trusts the test CA (through $SSL_CERT_FILE, set after p2psync was
imported) completes the TLS handshake.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.errors import RelayUnreachable
from p2psync.relay.client import RelayClient
from p2psync.store.library import Library
from tests import relay_link
from tests.test_relay_server import RelayProcess
from tests.tls_support import relay_certificates

HOST = "relay.p2psync.test"


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 in a thread of its own: records each CONNECT target and
    tunnels it to 127.0.0.1 at the target's port (whatever the name)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").split()
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            if len(request) < 2 or request[0] != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.seen.append(request[1])
            port = int(request[1].rsplit(":", 1)[1])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, TimeoutError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def tls_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, Path]]:
    folder = tmp_path_factory.mktemp("tls-relay")
    ca, cert, key = relay_certificates(folder, HOST)
    relay = RelayProcess(folder / "data", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        yield relay, ca
    finally:
        assert relay.stop() == 0


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy()
    try:
        yield running
    finally:
        running.stop()


def _network(monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy, ca: Path, no_proxy: str = "") -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                 "no_proxy", "SSL_CERT_DIR"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    # 127.0.0.1 and localhost are not covered: the proxy itself is reached by address.
    monkeypatch.setenv("NO_PROXY", no_proxy or "example.invalid")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))


def test_the_relay_is_reached_through_https_proxy_and_trusts_ssl_cert_file(
    tls_relay: tuple[RelayProcess, Path], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    relay, ca = tls_relay
    _network(monkeypatch, proxy, ca)
    url = f"https://{HOST}:{relay.port}"

    async def health() -> dict[str, object]:
        async with RelayClient(url) as client:
            return await client.health()

    assert asyncio.run(health())["ok"] is True
    assert proxy.seen == [f"{HOST}:{relay.port}"]
    # A whole sign-up and first sync, as `account signup` does it, through the proxy as well.
    with Library.create(tmp_path / "lib", "proxied") as library:
        report = relay_link.signup(library, url, "proxy@example.test", "correct horse battery staple 9")
        assert report.sync is not None and report.sync.error is None
    assert len(proxy.seen) >= 2 and set(proxy.seen) == {f"{HOST}:{relay.port}"}


def test_no_proxy_is_honoured(
    tls_relay: tuple[RelayProcess, Path], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay, ca = tls_relay
    _network(monkeypatch, proxy, ca, no_proxy="p2psync.test")

    async def health() -> None:
        async with RelayClient(f"https://{HOST}:{relay.port}", timeout=10) as client:
            await client.health()

    with pytest.raises(RelayUnreachable):  # straight to a name that resolves nowhere: not through the proxy
        asyncio.run(health())
    assert proxy.seen == []


def test_a_relay_signed_by_an_untrusted_ca_is_refused(
    tls_relay: tuple[RelayProcess, Path], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    relay, _ = tls_relay
    other_ca, _, _ = relay_certificates(tmp_path, HOST)
    _network(monkeypatch, proxy, other_ca)

    async def health() -> None:
        async with RelayClient(f"https://{HOST}:{relay.port}", timeout=10) as client:
            await client.health()

    with pytest.raises(RelayUnreachable, match=r"does not trust its TLS certificate.*SSL_CERT_FILE"):
        asyncio.run(health())
    assert proxy.seen == [f"{HOST}:{relay.port}"]
