"""The peer protocol over real TLS on 127.0.0.1: real aiohttp servers, real libraries on disk,
each Node with its own database thread. Nothing here uses mDNS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2psync.errors import PeerRefused, PeerUnreachable
from p2psync.net import frames, tls
from p2psync.net.protocol import LIBRARY_HEADER, PREFIX, VERSION_HEADER
from p2psync.node import Address, Node
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from tests.sync_support import digest, founded, joined


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    a.close()
    b.close()
    return tmp_path / "a", tmp_path / "b"


async def serving(path: Path) -> Node:
    node = Node(path)
    await node.serve("127.0.0.1", 0)
    return node


def test_two_devices_sync_both_ways_over_tls(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    with Library.open(pa) as a, Library.open(pb) as b:
        ra = a.add_reference({"title": "From A", "authors": [{"family": "Curie", "given": "Marie"}]})
        rb = b.add_reference({"title": "From B"})
        gid = b.create_group("Reading")
        b.add_to_group(gid, [rb])

    async def scenario() -> Any:
        server, client = await serving(pa), Node(pb)
        try:
            [result] = await client.sync([Address("127.0.0.1", server.port or 0)])
            again = await client.sync([Address("127.0.0.1", server.port or 0)])
            return result, again[0]
        finally:
            await client.close()
            await server.close()

    result, again = run(scenario())
    assert not isinstance(result, Exception), result
    assert result.received.applied >= 1 and result.sent["applied"] >= 1
    assert again.received.applied == 0 and again.sent["applied"] == 0  # nothing new: nothing moves
    with Library.open(pa) as a, Library.open(pb) as b:
        assert digest(a) == digest(b)
        assert a.get_reference(rb)["title"] == "From B" and b.get_reference(ra)["title"] == "From A"
        [status] = peer_store.peer_status(b)
        assert status.device_id == a.device_id
        assert status.last_sync is not None and status.last_error is None
        assert status.address is not None and status.address.startswith("127.0.0.1:")


def test_a_stranger_gets_nothing_but_hello(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, _ = pair
    stranger = Library.create(tmp_path / "x", "X")
    stranger.add_reference({"title": "secret of X"})
    stranger.close()

    async def scenario2() -> list[Any]:
        server, client = await serving(pa), Node(tmp_path / "x")
        try:
            return await client.sync([Address("127.0.0.1", server.port or 0)])
        finally:
            await client.close()
            await server.close()

    [outcome] = run(scenario2())
    assert isinstance(outcome, PeerRefused)  # the stranger does not trust A's key either
    with Library.open(pa) as a:
        assert [r["title"] for r in a.list_references()] == []


async def raw_session(path: Path, accept_any: bool = True) -> tuple[aiohttp.ClientSession, str]:
    library = Library.open(path)
    cert, key = tls.certificate_files(library.identity(), path / "device.key", path)
    library_id = library.library_id
    library.close()
    context = tls.client_context(cert, key, lambda _key: accept_any)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    return session, library_id


def test_server_refuses_strangers_bad_versions_and_bad_frames(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    Library.create(tmp_path / "x", "X").close()
    before = None
    with Library.open(pa) as a:
        before = digest(a)

    async def scenario() -> dict[str, Any]:
        server = await serving(pa)
        base = f"https://127.0.0.1:{server.port}"
        out: dict[str, Any] = {}
        stranger, _ = await raw_session(tmp_path / "x")
        member, library_id = await raw_session(pb)
        try:
            ok = {VERSION_HEADER: "1", LIBRARY_HEADER: library_id}
            async with stranger.post(base + PREFIX + "/vv", json={"vv": {}}, headers=ok) as r:
                out["stranger"] = (r.status, (await r.json())["error"])
            async with member.post(base + PREFIX + "/vv", json={"vv": {}}, headers={**ok, VERSION_HEADER: "9"}) as r:
                out["version"] = (r.status, (await r.json())["error"])
            wrong_library = {**ok, LIBRARY_HEADER: "x" * 16}
            async with member.post(base + PREFIX + "/vv", json={"vv": {}}, headers=wrong_library) as r:
                out["library"] = (r.status, (await r.json())["error"])
            async with member.post(base + PREFIX + "/vv", json={"vv": "nonsense"}, headers=ok) as r:
                out["bad_vv"] = r.status
            async with member.post(base + PREFIX + "/vv", data=b"x" * (3 * 1024 * 1024), headers=ok) as r:
                out["huge_json"] = r.status
            huge_frame = (10 * 1024 * 1024).to_bytes(4, "big") + b"x" * 100
            async with member.post(base + PREFIX + "/push", data=huge_frame, headers=ok) as r:
                out["huge_frame"] = (r.status, (await r.json())["error"])
            garbage = frames.frame(b"not a change set") + frames.END
            async with member.post(base + PREFIX + "/push", data=garbage, headers=ok) as r:
                out["garbage"] = (r.status, (await r.json())["rejected"][0]["reason"])
            cut = frames.frame(b"{}")[:3]
            async with member.post(base + PREFIX + "/push", data=cut, headers=ok) as r:
                out["cut"] = r.status
            async with member.get(base + "/p2psync/hello") as r:
                out["hello"] = await r.json()
        finally:
            await stranger.close()
            await member.close()
            await server.close()
        return out

    out = run(scenario())
    assert out["stranger"] == (403, "not_member")
    assert out["version"] == (400, "protocol")
    assert out["library"] == (409, "library")
    assert out["bad_vv"] == 400
    assert out["huge_json"] == 413
    assert out["huge_frame"] == (400, "frames")
    assert out["garbage"] == (200, "malformed")
    assert out["cut"] == 400
    assert out["hello"] == {"p2psync": True, "versions": [1]}
    with Library.open(pa) as a:
        assert digest(a) == before


def test_unreachable_and_wrong_version_are_errors_in_words(pair: tuple[Path, Path]) -> None:
    _, pb = pair

    async def scenario() -> Any:
        client = Node(pb)
        try:
            return await client.sync([Address("127.0.0.1", 9)])
        finally:
            await client.close()

    [outcome] = run(scenario())
    assert isinstance(outcome, PeerUnreachable)
    assert "Could not reach 127.0.0.1:9" in outcome.message


def test_a_library_call_that_raises_stop_iteration_fails_instead_of_hanging(tmp_path: Path) -> None:
    """asyncio cannot put StopIteration into a future: before, the awaiting caller (a web page, a
    peer's request) waited for ever."""
    import asyncio

    from p2psync.net.worker import LibraryWorker
    from p2psync.store.library import Library

    Library.create(tmp_path / "lib").close()

    async def call() -> None:
        worker = LibraryWorker(tmp_path / "lib")
        try:
            await asyncio.wait_for(worker.call(lambda library: next(iter([]))), timeout=10)
        finally:
            await worker.close()

    with pytest.raises(RuntimeError, match="StopIteration"):
        asyncio.run(call())
