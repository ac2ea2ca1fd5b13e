"""Attachment sync over real TLS on 127.0.0.1 (protocol/attachments.md): real servers, real
libraries on disk, real files. Bytes are counted at the sender to prove what moved."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from p2psync.node import Address, Node
from p2psync.store import transfers
from p2psync.store.library import Library
from tests.sync_support import founded, joined


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def pdf_like(rng: random.Random, size: int) -> bytes:
    return b"%PDF-1.7\n" + rng.randbytes(size - 9)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    a.close()
    b.close()
    return tmp_path / "a", tmp_path / "b"


async def sync_once(client_path: Path, *servers: Path) -> tuple[list[Any], Any]:
    nodes = [Node(p) for p in servers]
    ports = [await n.serve("127.0.0.1", 0) for n in nodes]
    client = Node(client_path)
    try:
        results = await client.sync([Address("127.0.0.1", port) for port in ports])
        fetched = await client.fetch(results)
        return results, fetched
    finally:
        await client.close()
        for node in nodes:
            await node.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_attachments_arrive_whole_and_edits_move_only_changed_chunks(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    rng = random.Random(7)
    sources = []
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Paper"})
        for i, size in enumerate([3_000_000, 1_200_000, 0, 70_000]):
            source = tmp_path / f"file{i}.pdf"
            source.write_bytes(pdf_like(rng, size) if size else b"")
            a.attach(ref, source)
            sources.append(source)
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 4 and fetched.missing == []
    assert fetched.bytes_fetched == sum(s.stat().st_size for s in sources)
    with Library.open(pb) as b:
        for source in sources:
            path = b.attachment_path(ref, source.name)
            assert sha(path) == sha(source)
        assert transfers.missing(b) == []
    # Annotate in place on A: append 100 KB; only the last chunks move.
    with Library.open(pa) as a:
        path = a.attachment_path(ref, "file0.pdf")
        with path.open("ab") as handle:
            handle.write(rng.randbytes(100_000))
        assert [c["change"] for c in a.scan_attachments()] == ["modified"]
        expected = sha(path)
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 1
    assert 100_000 <= fetched.bytes_fetched < 400_000, fetched.as_dict()
    assert fetched.bytes_local > 2_500_000
    with Library.open(pb) as b:
        assert sha(b.attachment_path(ref, "file0.pdf")) == expected
    # Nothing new: nothing moves.
    _, fetched = run(sync_once(pb, pa))
    assert fetched.wanted_files == 0 and fetched.bytes_fetched == 0
