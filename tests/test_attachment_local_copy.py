"""An edit in place reaches a peer that holds the old version: the unchanged chunks are copied
from the old file on the peer's disk on trust (store/local_copy.py), never from a file that
changed since its chunks were recorded, and the new file still lands whole, by rename, only if
its SHA-256 is the one the signed manifest names. Real libraries, real servers on 127.0.0.1,
real files; the kill test runs the real `p2psync sync` in its own process."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2psync.model.chunking import chunk_bytes, manifest_of, offsets
from p2psync.store import local_copy, transfers
from p2psync.store.library import Library
from tests.sync_support import founded
from tests.test_attachment_resume import WAIT, LocalDaemon, Setup, SyncRun, sha_of
from tests.test_attachment_sync import pair, pdf_like, run, sha, sync_once

__all__ = ["pair"]  # (the fixture, used by name)


def _edited(lib: Library, ref: str, name: str, rng: random.Random) -> tuple[bytes, list[list[object]], list[int]]:
    """The bytes, chunks and chunk starts of the file with 50 KB appended (not written anywhere)."""
    data = lib.attachment_path(ref, name).read_bytes() + rng.randbytes(50_000)
    chunks = chunk_bytes(data)
    return data, chunks, offsets(chunks)


def test_chunks_of_a_file_changed_since_it_was_recorded_are_not_copied_on_trust(tmp_path: Path) -> None:
    lib = founded(tmp_path / "lib")
    rng = random.Random(3)
    ref = lib.add_reference({"title": "Annotated"})
    source = tmp_path / "paper.pdf"
    source.write_bytes(pdf_like(rng, 600_000))
    lib.attach(ref, source)
    path = lib.attachment_path(ref, "paper.pdf")
    new, chunks, starts = _edited(lib, ref, "paper.pdf", rng)
    batch = list(range(len(chunks)))
    partial = tmp_path / "partial"

    # Unchanged since recorded: its chunks are copied (by the kernel) and are the new file's bytes.
    locations = transfers.locate(lib, [str(c[0]) for c in chunks])
    found = [i for i, loc in zip(batch, locations, strict=True) if loc is not None]
    assert len(found) >= len(chunks) - 2  # all but the re-cut last chunk(s)
    copied, left = local_copy.copy_trusted(str(partial), starts, batch, locations)
    assert sorted(copied) == found and left == []
    written = partial.read_bytes()
    for i in copied:
        assert written[starts[i] : starts[i] + int(chunks[i][1])] == new[starts[i] : starts[i] + int(chunks[i][1])]

    # Changed after it was recorded (same size, one byte in the middle, a later mtime), not yet
    # scanned: located as recorded, but nothing of it is copied on trust.
    partial.unlink()
    locations = transfers.locate(lib, [str(c[0]) for c in chunks])
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[300_000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == before.st_size
    copied, left = local_copy.copy_trusted(str(partial), starts, batch, locations)
    assert copied == [] and sorted(left) == found
    lib.close()


def test_an_append_lands_whole_by_rename_and_is_the_file_the_manifest_names(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    pa, pb = pair
    rng = random.Random(11)
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Paper"})
        source = tmp_path / "paper.pdf"
        source.write_bytes(pdf_like(rng, 3_000_000))
        a.attach(ref, source)
    run(sync_once(pb, pa))
    with Library.open(pb) as b:
        old = b.attachment_path(ref, "paper.pdf").stat()
    with Library.open(pa) as a:
        with a.attachment_path(ref, "paper.pdf").open("ab") as handle:
            handle.write(rng.randbytes(100_000))
        assert [c["change"] for c in a.scan_attachments()] == ["modified"]
        manifest = manifest_of(a.attachment_path(ref, "paper.pdf"))
    _, fetched = run(sync_once(pb, pa))
    assert fetched.files == 1 and fetched.missing == [], fetched.as_dict()
    assert fetched.bytes_local >= 2_800_000 and fetched.bytes_fetched < 400_000, fetched.as_dict()
    with Library.open(pb) as b:
        path = b.attachment_path(ref, "paper.pdf")
        [item] = b.list_attachments(ref)
        row = b.db.execute("SELECT sha256, size FROM attachment_files WHERE ref_id = ?", [ref]).fetchone()
    assert sha(path) == manifest["sha256"] == item["sha256"] == row[0] and item["present"]
    assert path.stat().st_size == manifest["size"] == row[1]
    assert path.stat().st_ino != old.st_ino  # a new file put in place, not the old one written over
    assert not list((pb / "attachments" / ".p2psync" / "partial").glob("*"))


def test_a_file_changed_without_its_size_or_mtime_showing_is_caught_by_the_whole_file_hash(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    pa, pb = pair
    rng = random.Random(5)
    with Library.open(pa) as a:
        ref = a.add_reference({"title": "Paper"})
        source = tmp_path / "paper.pdf"
        source.write_bytes(pdf_like(rng, 2_000_000))
        a.attach(ref, source)
    run(sync_once(pb, pa))
    # On B, a byte in the middle changes and the mtime is put back: no scan can see it, and the
    # chunk index still says the old chunks are there.
    with Library.open(pb) as b:
        path = b.attachment_path(ref, "paper.pdf")
        stat = path.stat()
        data = bytearray(path.read_bytes())
        data[1_000_000] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert b.scan_attachments() == []
    with Library.open(pa) as a:
        with a.attachment_path(ref, "paper.pdf").open("ab") as handle:
            handle.write(rng.randbytes(100_000))
        a.scan_attachments()
        expected = manifest_of(a.attachment_path(ref, "paper.pdf"))
    starts = offsets(expected["chunks"])
    spoiled = max(i for i, start in enumerate(starts) if start <= 1_000_000)
    _, fetched = run(sync_once(pb, pa))
    # The trusted copy made a file that is not the one named; it was built again with each chunk
    # verified: the spoiled chunk came from A, and nothing is blamed on the manifest.
    assert fetched.files == 1 and fetched.missing == [], fetched.as_dict()
    assert fetched.bytes_fetched >= 100_000 + int(expected["chunks"][spoiled][1]), fetched.as_dict()
    with Library.open(pb) as b:
        assert sha(b.attachment_path(ref, "paper.pdf")) == expected["sha256"]
        assert b.db.execute("SELECT COUNT(*) FROM attachment_missing").fetchone()[0] == 0
        assert transfers.missing(b) == []


def test_a_receiver_killed_while_an_edit_lands_keeps_the_old_version_whole(tmp_path: Path) -> None:
    s = Setup(tmp_path, 24 * 1000 * 1000)
    daemon = LocalDaemon(s.pa)
    try:
        code, report, err = SyncRun(s, daemon.address).finish(limit=60)
        assert code == 0 and report["attachments"]["files"] == 1, err
        old = s.sha
        with Library.open(s.pa) as a:  # annotated in place on A (recorded when B next syncs)
            with a.attachment_path(s.ref, s.source.name).open("ab") as handle:
                handle.write(random.Random(2).randbytes(100_000))
            new = manifest_of(a.attachment_path(s.ref, s.source.name))["sha256"]
        partial = s.pb / "attachments" / ".p2psync" / "partial" / f"{s.ref}-{new}"
        kills = []
        # Killed as the partial file appears, then later and later (each sync resumes from what
        # the last left: starting up, syncing the change set, copying, sealing, landing) until
        # one of them has put the new version in place.
        moments: list[float | str] = ["appears"] + [0.1 * n for n in range(2, 40)]
        for moment in moments:
            sync = SyncRun(s, daemon.address)
            try:
                ended = sync.wait(moment) if isinstance(moment, float) else not _wait_partial(partial, sync.running)
            finally:
                sync.kill()
            on_disk = sha_of(s.final)
            kills.append(f"{moment:.1f}" if isinstance(moment, float) else moment)
            kills[-1] += f"{' (had ended)' if ended else ''}: {'new' if on_disk == new else 'old'}"
            # The attachment's path holds the old version or the new one, whole; never a part.
            assert on_disk in (old, new), kills
            with Library.open(s.pb) as b:  # the library opens after every kill
                [item] = b.list_attachments(s.ref)
            assert item["present"] == (on_disk == item["sha256"]), (item, kills)
            if on_disk == new:
                break
        code, report, err = SyncRun(s, daemon.address).finish(limit=WAIT * 3)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert code == 0, err
    assert sha_of(s.final) == new, kills
    with Library.open(s.pb) as b:
        [item] = b.list_attachments(s.ref)
        assert item["present"] and item["sha256"] == new
        assert transfers.missing(b) == []
    assert not list((s.pb / "attachments" / ".p2psync" / "partial").glob("*"))
    print("killed at", "; ".join(kills))


def _wait_partial(partial: Path, running: Callable[[], bool]) -> bool:
    """Poll (every ms, at most WAIT seconds) until the partial file exists; False if the sync
    ended first."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and running():
        if partial.exists():
            return True
        time.sleep(0.001)
    return False


def test_without_a_kernel_copy_the_chunks_pass_through_a_buffer(tmp_path: Path, monkeypatch: Any) -> None:
    """macOS and Windows have no copy_file_range: the same chunks arrive, copied through a buffer."""
    lib = founded(tmp_path / "lib")
    rng = random.Random(4)
    ref = lib.add_reference({"title": "Annotated"})
    source = tmp_path / "paper.pdf"
    source.write_bytes(pdf_like(rng, 2_500_000))
    lib.attach(ref, source)
    new, chunks, starts = _edited(lib, ref, "paper.pdf", rng)
    monkeypatch.setattr(local_copy, "_KERNEL_COPY", False)
    monkeypatch.setattr(local_copy, "COPY_BLOCK", 100_000)  # (several reads per run of chunks)
    locations = transfers.locate(lib, [str(c[0]) for c in chunks])
    copied, left = local_copy.copy_trusted(str(tmp_path / "partial"), starts, list(range(len(chunks))), locations)
    assert len(copied) >= len(chunks) - 2 and left == []
    written = (tmp_path / "partial").read_bytes()
    end = max(starts[i] + int(chunks[i][1]) for i in copied)
    assert written[:end] == new[:end]
    lib.close()
