"""The /chunks wire form between disk and network (net/chunk_io.py): the sender's framing read
straight from files, and the receiver's parser fed in pieces of any size, verifying every chunk
before it is written and hashing the file as it goes. Real files, no network (the end-to-end
paths are in test_attachment_sync.py and test_attachment_resume.py)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from p2psync.errors import ProtocolMismatch
from p2psync.model.chunking import MAX_SIZE, chunk_bytes, offsets
from p2psync.net.chunk_io import LENGTH, ChunkStream, PartialFile, frame_chunks
from p2psync.store import transfers
from p2psync.store.transfers import Location, Need


def _file(tmp_path: Path, seed: int = 1, size: int = 700_000) -> tuple[bytes, list[list[object]], Path]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"source-{seed}.pdf"
    path.write_bytes(data)
    return data, chunk_bytes(data), path


def _locations(path: Path, chunks: list[list[object]]) -> list[Location | None]:
    stat = path.stat()
    return [
        Location(str(path), at, int(size), stat.st_size, stat.st_mtime_ns)  # type: ignore[arg-type]
        for at, (_, size) in zip(offsets(chunks), chunks, strict=True)
    ]


def _old_framing(locations: list[Location | None]) -> bytes:
    """The wire form as the sender made it before frame_chunks (chunk by chunk)."""
    return b"".join(LENGTH.pack(len(d)) + d if d else LENGTH.pack(0) for d in transfers.read_chunks(locations))


def _partial(tmp_path: Path, data: bytes, chunks: list[list[object]]) -> PartialFile:
    need = Need("r" * 26, "x.pdf", hashlib.sha256(data).hexdigest(), len(data), chunks, str(tmp_path / "partial"))
    return PartialFile(need, offsets(chunks), set(range(len(chunks))))


def _feed_in_pieces(stream: ChunkStream, wire: bytes, sizes: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Feed the answer as a reader would: pieces of the given sizes, the unparsed rest kept in front."""
    good: list[int] = []
    bad: list[int] = []
    lacking: list[int] = []
    held = b""
    at = 0
    for size in [*sizes, len(wire)]:
        held += wire[at : at + size]
        at += size
        parsed, used = stream.feed(held)
        held = held[used:]
        good += parsed.good
        bad += parsed.bad
        lacking += parsed.lacking
        if at >= len(wire):
            break
    return good, bad, lacking


def test_frame_chunks_sends_what_reading_chunk_by_chunk_sent(tmp_path: Path) -> None:
    _data, chunks, path = _file(tmp_path)
    _, other_chunks, other = _file(tmp_path, seed=2, size=300_000)
    locations = _locations(path, chunks)
    mixed = [locations[2], None, *locations[:3], *_locations(other, other_chunks), locations[-1]]
    assert bytes(frame_chunks(mixed)) == _old_framing(mixed)
    assert bytes(frame_chunks(locations)) == _old_framing(locations)


def test_frame_chunks_sends_nothing_of_a_file_changed_since_it_was_indexed(tmp_path: Path) -> None:
    data, chunks, path = _file(tmp_path)
    locations = _locations(path, chunks)
    _, other_chunks, other = _file(tmp_path, seed=2, size=300_000)
    with path.open("r+b") as handle:  # cut short (an edit in place not yet scanned)
        handle.truncate(len(data) - 1000)
    mixed = [*locations, *_locations(other, other_chunks)]
    framed = bytes(frame_chunks(mixed))
    assert framed == _old_framing(mixed)
    assert framed.startswith(LENGTH.pack(0) * len(locations)) and len(framed) > 300_000


@pytest.mark.parametrize("piece", [1, 3, 4096, 1 << 20])
def test_an_answer_cut_anywhere_makes_the_file_and_its_hash_without_reading_it_back(tmp_path: Path, piece: int) -> None:
    data, chunks, path = _file(tmp_path)
    file = _partial(tmp_path, data, chunks)
    stream = ChunkStream(file, list(range(len(chunks))), "d" * 52)
    wire = bytes(frame_chunks(_locations(path, chunks)))
    # (small pieces: the first 3000 bytes a few at a time, then the rest at once)
    good, bad, lacking = _feed_in_pieces(stream, wire, [piece] * min(len(wire) // piece, 3000 // piece + 3))
    assert stream.complete
    assert sorted(good) == list(range(len(chunks))) and bad == [] and lacking == []
    assert Path(file.need.partial).read_bytes() == data
    assert file.hashed == len(data) and file.digest.hexdigest() == file.need.sha256
    assert transfers.seal_partial(file.need, file.digest, file.hashed)


def test_a_tampered_or_wrong_length_chunk_is_refused_and_nothing_of_it_written(tmp_path: Path) -> None:
    data, chunks, path = _file(tmp_path)
    file = _partial(tmp_path, data, chunks)
    wire = bytearray(frame_chunks(_locations(path, chunks)))
    starts = offsets(chunks)
    second = starts[1] + 4 * 2  # the second chunk's first byte on the wire
    wire[second + 10] ^= 0xFF  # its bytes changed, its length kept
    # The fourth chunk sent one byte short (the rest of the stream shifted accordingly).
    fourth = starts[3] + 4 * 4
    size4 = int(chunks[3][1])  # type: ignore[call-overload]
    wire[fourth - 4 : fourth] = LENGTH.pack(size4 - 1)
    del wire[fourth]
    stream = ChunkStream(file, list(range(len(chunks))), "d" * 52)
    good, bad, lacking = _feed_in_pieces(stream, bytes(wire), [65536] * 20)
    assert (
        sorted(bad) == [1, 3] and lacking == [] and sorted(good) == [i for i in range(len(chunks)) if i not in (1, 3)]
    )
    written = Path(file.need.partial).read_bytes()
    for index in (1, 3):
        at = starts[index]
        assert written[at : at + int(chunks[index][1])].strip(b"\0") == b""  # type: ignore[call-overload]
    # The hash stopped before the first gap; sealing reads the rest back once the gaps are filled.
    assert file.hashed == starts[1]
    stream = ChunkStream(file, [1, 3], "e" * 52)
    good, bad, _ = _feed_in_pieces(stream, _old_framing([_locations(path, chunks)[i] for i in (1, 3)]), [])
    assert sorted(good) == [1, 3] and bad == []
    assert transfers.seal_partial(file.need, file.digest, file.hashed)
    assert Path(file.need.partial).read_bytes() == data


def test_a_length_longer_than_any_chunk_ends_the_answer(tmp_path: Path) -> None:
    data, chunks, _path = _file(tmp_path)
    file = _partial(tmp_path, data, chunks)
    stream = ChunkStream(file, list(range(len(chunks))), "d" * 52)
    with pytest.raises(ProtocolMismatch, match="longer than any chunk"):
        stream.feed(LENGTH.pack(MAX_SIZE + 1) + b"\0" * 100)


def test_a_file_hashed_as_it_was_written_is_still_refused_if_it_is_not_the_named_file(tmp_path: Path) -> None:
    data, chunks, path = _file(tmp_path)
    file = _partial(tmp_path, data, chunks)
    file.need.sha256 = hashlib.sha256(b"another file").hexdigest()  # a manifest that lies
    stream = ChunkStream(file, list(range(len(chunks))), "d" * 52)
    _feed_in_pieces(stream, bytes(frame_chunks(_locations(path, chunks))), [1 << 20])
    assert not transfers.seal_partial(file.need, file.digest, file.hashed)
    assert not Path(file.need.partial).exists()


def test_files_land_together_and_a_failed_batch_moves_none(tmp_path: Path) -> None:
    from p2psync.store.sync import sync_libraries
    from tests.sync_support import founded, joined

    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Two files"})
    sources = []
    for seed in (1, 2):
        data, _, path = _file(tmp_path, seed=seed, size=200_000)
        a.attach(ref, path)
        sources.append(data)
    sync_libraries(a, b)
    needs = sorted(transfers.needs(b), key=lambda n: n.name)
    assert [n.name for n in needs] == ["source-1.pdf", "source-2.pdf"]
    for need, data in zip(needs, sources, strict=True):
        Path(need.partial).parent.mkdir(parents=True, exist_ok=True)
        Path(need.partial).write_bytes(data)
    # The second file's place is taken by a folder: it cannot land, so neither does the first.
    blocker = b.attachment_file(ref, "source-2.pdf")
    Path(blocker).mkdir(parents=True)
    (Path(blocker) / "in-the-way").write_bytes(b"x")
    with pytest.raises(OSError):
        transfers.finish_all(b, needs)
    assert all(Path(n.partial).read_bytes() == d for n, d in zip(needs, sources, strict=True))
    assert not Path(b.attachment_file(ref, "source-1.pdf")).exists()
    assert b.db.execute("SELECT COUNT(*) FROM attachment_files").fetchone()[0] == 0
    (Path(blocker) / "in-the-way").unlink()
    Path(blocker).rmdir()
    assert transfers.finish_all(b, needs) == ["shown", "shown"]
    for name, data in zip(("source-1.pdf", "source-2.pdf"), sources, strict=True):
        assert Path(b.attachment_file(ref, name)).read_bytes() == data
    assert transfers.needs(b) == []
    a.close()
    b.close()


def test_the_chunk_connection_pins_the_peer_key_and_fetches_from_a_real_server(tmp_path: Path) -> None:
    import asyncio

    from p2psync.errors import NetworkError
    from p2psync.net import tls
    from p2psync.net.chunk_client import ChunkConnection
    from p2psync.node import Node
    from tests.sync_support import founded, joined

    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    data, chunks, path = _file(tmp_path)
    a.attach(a.add_reference({"title": "Served"}), path)
    key_a, device_a, library_id = a.identity().public_bytes, a.device_id, a.library_id
    cert, key = tls.certificate_files(b.identity(), tmp_path / "b" / "device.key", tmp_path / "b")
    a.close()
    b.close()

    def connection(accept: bool) -> ChunkConnection:
        def check(shown: bytes) -> bool:
            return accept and shown == key_a

        return ChunkConnection("127.0.0.1", port, device_a, tls.client_context(cert, key, check), check, library_id)

    async def scenario() -> tuple[PartialFile, ChunkStream, str]:
        nonlocal port
        node = Node(tmp_path / "a")
        port = await node.serve("127.0.0.1", 0)
        try:
            file = _partial(tmp_path, data, chunks)
            wanted = [str(c[0]) for c in chunks]
            refused = ""
            try:  # a server whose key is not the one expected gets no request
                await asyncio.to_thread(connection(False).fetch, wanted, ChunkStream(file, [0], "d"), print)
            except NetworkError as exc:
                refused = exc.message
            stream = ChunkStream(file, list(range(len(chunks))), device_a)
            batches: list[object] = []
            await asyncio.to_thread(connection(True).fetch, wanted, stream, batches.append)
            return file, stream, refused
        finally:
            await node.close()

    port = 0
    file, stream, refused = asyncio.run(scenario())
    assert refused.startswith("The device at 127.0.0.1") and "is not" in refused
    assert stream.complete and Path(file.need.partial).read_bytes() == data
    assert file.hashed == len(data) and transfers.seal_partial(file.need, file.digest, file.hashed)
