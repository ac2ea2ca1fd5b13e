"""Attachment sync over real TLS on 127.0.0.1 (protocol/attachments.md): real servers, real
libraries on disk, real files. Bytes are counted at the sender to prove what moved."""

from __future__ import annotations

import asyncio
import hashlib
import os
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


def test_attachment_replaced_on_both_machines_is_a_conflict_with_both_files_kept(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    pa, pb = pair
    rng = random.Random(11)
    original, mine, theirs = (tmp_path / n for n in ("v0", "v1", "v2"))
    for path in (original, mine, theirs):
        path.write_bytes(pdf_like(rng, 400_000))
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Contested"})
        a.attach(ref, original, name="paper.pdf")
    run(sync_once(pb, pa))
    with Library.open(pa) as a:
        a.attach(ref, mine, name="paper.pdf")
    with Library.open(pb) as b:
        b.attach(ref, theirs, name="paper.pdf")
    run(sync_once(pb, pa))  # B pulls A's version and pushes its own
    run(sync_once(pa, pb))  # A fetches B's file
    for path in (pa, pb):
        with Library.open(path) as lib:
            [item] = lib.list_attachments(ref)
            assert item["conflict"] and item["present"]
            kept = {v["sha256"]: v for v in item["versions"]}
            assert set(kept) == {sha(mine), sha(theirs)}
            assert all(v["present"] and sha(Path(v["path"])) == digest for digest, v in kept.items())
            assert [c["id"] for c in lib.list_conflicts()] == [ref]
            assert lib.list_conflicts()[0]["fields"] == ["attachment:paper.pdf"]
            assert lib.count_references(group="Sync Conflicts") == 1
    with Library.open(pb) as b:
        assert b.resolve_conflict(ref, fields={"attachment:paper.pdf": "local"}) == ["attachment:paper.pdf"]
        [item] = b.list_attachments(ref)
        assert not item["conflict"] and sha(Path(item["path"])) == sha(theirs)
        assert not transfers.version_path(b, ref, sha(mine)).exists()  # space freed
    run(sync_once(pa, pb))
    with Library.open(pa) as a:
        [item] = a.list_attachments(ref)
        assert not item["conflict"] and sha(Path(item["path"])) == sha(theirs)
        assert list((pa / "attachments" / ref).rglob("*")) == [pa / "attachments" / ref / "paper.pdf"]
        assert a.list_conflicts() == []


def test_deleting_frees_space_on_every_machine(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    rng = random.Random(3)
    with Library.open(pa) as a:
        kept, gone, trashed = (a.add_reference({"title": t}) for t in ("kept", "gone", "trashed"))
        for ref, name in ((kept, "k.pdf"), (gone, "g.pdf"), (trashed, "t.pdf")):
            source = tmp_path / name
            source.write_bytes(pdf_like(rng, 300_000))
            a.attach(ref, source)
    run(sync_once(pb, pa))
    assert {p.name for p in (pb / "attachments").rglob("*.pdf")} == {"k.pdf", "g.pdf", "t.pdf"}
    with Library.open(pa) as a:
        a.remove_attachment(gone, "g.pdf")
        a.trash_reference(trashed)
        assert a.empty_trash() == 1
    run(sync_once(pb, pa))
    assert {p.name for p in (pb / "attachments").rglob("*") if p.is_file()} == {"k.pdf"}
    assert {p.name for p in (pa / "attachments").rglob("*") if p.is_file()} == {"k.pdf"}
    with Library.open(pb) as b:
        indexed = {r[0] for r in b.db.execute("SELECT DISTINCT file FROM chunk_index")}
        assert indexed == {sha(pb / "attachments" / kept / "k.pdf")}  # nothing points at removed files


def test_a_bad_chunk_is_refused_counted_and_fetched_from_another_peer(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    source = tmp_path / "big.pdf"
    source.write_bytes(pdf_like(random.Random(5), 2_000_000))
    ref = a.add_reference({"title": "Shared"})
    a.attach(ref, source)
    for lib in (a, b, c):
        lib.close()
    run(sync_once(pc := tmp_path / "c", tmp_path / "a"))  # C has the file too now
    with Library.open(tmp_path / "a") as a:
        device_a = a.device_id
        path = a.attachment_path(ref, "big.pdf")
    # Damage A's copy without changing its size or time: A now serves bad bytes.
    stat = path.stat()
    data = bytearray(path.read_bytes())
    for at in range(0, len(data), 50_000):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _, fetched = run(sync_once(tmp_path / "b", tmp_path / "a", pc))
    assert fetched.files == 1 and fetched.missing == []
    assert fetched.chunks_refused > 0 and fetched.refused_by_peer == {device_a: fetched.chunks_refused}
    with Library.open(tmp_path / "b") as b:
        assert sha(b.attachment_path(ref, "big.pdf")) == sha(source)


def test_chunks_are_fetched_from_several_peers_and_status_says_why_a_file_is_missing(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    rng = random.Random(9)
    ref = a.add_reference({"title": "Many"})
    for i in range(6):
        source = tmp_path / f"f{i}.pdf"
        source.write_bytes(pdf_like(rng, 9_000_000 if i == 0 else 1_000_000))
        a.attach(ref, source)
    for lib in (a, b, c):
        lib.close()
    run(sync_once(tmp_path / "c", tmp_path / "a"))
    _, fetched = run(sync_once(tmp_path / "b", tmp_path / "a", tmp_path / "c"))
    assert fetched.files == 6
    assert len(fetched.by_peer) == 2 and all(n > 0 for n in fetched.by_peer.values()), fetched.by_peer
    # A file no peer reached has: status says so.
    with Library.open(tmp_path / "a") as a:
        extra = tmp_path / "extra.pdf"
        extra.write_bytes(pdf_like(rng, 100_000))
        a.attach(ref, extra)
    with Library.open(tmp_path / "a") as a:
        a.attachment_path(ref, "extra.pdf").unlink()  # A lost its copy before anyone fetched it
    _, fetched = run(sync_once(tmp_path / "b", tmp_path / "a"))
    [missing] = fetched.missing
    assert missing.name == "extra.pdf" and missing.reason == "no_peer"
    with Library.open(tmp_path / "b") as b:
        [status] = transfers.missing(b)
        assert status["name"] == "extra.pdf" and status["reason"] == "no_peer" and status["detail"]


def test_a_file_deleted_from_disk_by_hand_is_fetched_again(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    source = tmp_path / "lost.pdf"
    source.write_bytes(pdf_like(random.Random(4), 500_000))
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Lost and found"})
        a.attach(ref, source)
    run(sync_once(pb, pa))
    (pb / "attachments" / ref / "lost.pdf").unlink()
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 1 and fetched.bytes_fetched == 500_000
    with Library.open(pb) as b, Library.open(pa) as a:
        assert sha(b.attachment_path(ref, "lost.pdf")) == sha(source)
        assert a.list_attachments(ref)[0]["present"]  # the attachment itself was never deleted


def test_a_chunk_of_the_wrong_length_is_refused_and_fetched_from_another_peer(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    source = tmp_path / "paper.pdf"
    source.write_bytes(pdf_like(random.Random(6), 1_500_000))
    ref = a.add_reference({"title": "Shared"})
    a.attach(ref, source)
    for lib in (a, b, c):
        lib.close()
    run(sync_once(tmp_path / "c", tmp_path / "a"))  # C has the file too now
    with Library.open(tmp_path / "a") as a:
        device_a = a.device_id
        # A's index says its first chunk is one byte shorter than it is: A sends it short, as a faulty peer would.
        with a.db.conn:
            a.db.execute("UPDATE chunk_index SET size = size - 1 WHERE offset = 0")
    _, fetched = run(sync_once(tmp_path / "b", tmp_path / "a"))
    assert fetched.files == 0 and fetched.refused_by_peer == {device_a: 1} and fetched.chunks_refused == 1
    [missing] = fetched.missing
    assert missing.reason == "verification" and device_a[:7] in missing.detail
    first = None
    with Library.open(tmp_path / "a") as a:
        first = a.list_attachments(ref, scan=False)[0]
    # C sends the one chunk A could not; what A sent is kept, not fetched again.
    _, fetched = run(sync_once(tmp_path / "b", tmp_path / "c"))
    assert fetched.files == 1 and fetched.missing == [] and fetched.chunks_refused == 0
    assert fetched.bytes_fetched <= 131_072 and fetched.bytes_resumed >= first["size"] - 131_072
    with Library.open(tmp_path / "b") as b:
        assert sha(b.attachment_path(ref, "paper.pdf")) == sha(source)
        assert transfers.missing(b) == []


def test_chunks_that_do_not_make_up_the_named_file_are_not_put_in_place(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from p2psync.engine import ops
    from p2psync.model.chunking import manifest_of

    pa, pb = pair
    source = tmp_path / "real.pdf"
    source.write_bytes(pdf_like(random.Random(8), 600_000))
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Forged"})
        a.attach(ref, source)
        # A faulty member names real chunks under a file hash they do not make up.
        lie = {**manifest_of(source), "sha256": hashlib.sha256(b"something else").hexdigest()}
        with a.writing() as writer:
            writer.log({"op": ops.ATTACHMENT_PUT, "ref": ref, "name": "lie.pdf", "value": lie, "seen": []})
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 1  # real.pdf
    [missing] = fetched.missing
    assert missing.name == "lie.pdf" and missing.reason == "manifest", missing
    assert "do not make up the file" in missing.detail
    with Library.open(pb) as b:
        folder = pb / "attachments" / ref
        assert sorted(p.name for p in folder.iterdir()) == ["real.pdf"]  # no partial, no lie.pdf
        [status] = transfers.missing(b)
        assert status["reason"] == "manifest"
    # It is not fetched again: the same chunks would make the same wrong file.
    _, fetched = run(sync_once(pb, pa))
    assert fetched.wanted_files == 0 and fetched.bytes_fetched == 0


def test_a_backup_keeps_both_versions_of_a_conflicted_attachment(pair: tuple[Path, Path], tmp_path: Path) -> None:
    from p2psync.store.backup import backup, restore

    pa, pb = pair
    rng = random.Random(12)
    original, mine, theirs = (tmp_path / n for n in ("v0", "v1", "v2"))
    for path in (original, mine, theirs):
        path.write_bytes(pdf_like(rng, 300_000))
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Contested"})
        a.attach(ref, original, name="paper.pdf")
    run(sync_once(pb, pa))
    with Library.open(pa) as a:
        a.attach(ref, mine, name="paper.pdf")
    with Library.open(pb) as b:
        b.attach(ref, theirs, name="paper.pdf")
    run(sync_once(pb, pa))
    with Library.open(pb) as b:
        backup(b, tmp_path / "b.zip")
    restore(tmp_path / "b.zip", tmp_path / "restored")
    with Library.open(tmp_path / "restored") as r:
        [item] = r.list_attachments(ref)
        kept = {v["sha256"]: v for v in item["versions"]}
        assert set(kept) == {sha(mine), sha(theirs)}
        assert all(v["present"] and sha(Path(v["path"])) == digest for digest, v in kept.items())
        assert transfers.needs(r) == []  # nothing to fetch: both versions came back from the backup


def test_one_pdf_attached_to_two_references_travels_once(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    source = tmp_path / "shared.pdf"
    source.write_bytes(pdf_like(random.Random(13), 700_000))
    with Library.open(pa) as a:
        refs = [a.add_reference({"title": t}) for t in ("Preprint", "Published")]
        for ref in refs:
            a.attach(ref, source)
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 2 and fetched.missing == []
    assert fetched.bytes_fetched == 700_000 and fetched.bytes_local == 700_000, fetched.as_dict()
    with Library.open(pb) as b:
        for ref in refs:
            assert sha(b.attachment_path(ref, "shared.pdf")) == sha(source)
