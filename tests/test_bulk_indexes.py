"""A receive of far more than the library holds drops the random-order sort indexes of the library
list and builds them again at its end (store/bulk.py); a process killed in between leaves them
out, and the next open builds them again."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from p2psync.net import frames
from p2psync.net.worker import LibraryWorker, receive_stream
from p2psync.store import bulk, schema
from p2psync.store.library import Library
from p2psync.store.sync import ReceiveReport, changesets_since, seal, version_vector
from tests.support import snapshot
from tests.sync_support import founded, joined


def _indexes(library: Library) -> dict[str, str]:
    rows = library.db.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL")
    return {name: " ".join(sql.split()) for name, sql in rows}


def test_the_deferrable_indexes_are_migration_13s() -> None:
    migration = " ".join(schema.MIGRATIONS[12].split())
    for name, sql in schema.DEFERRABLE_INDEXES.items():
        assert " ".join(sql.split()).replace("( ", "(") in migration.replace("( ", "("), name


def test_is_bulk_only_for_more_than_the_library_holds() -> None:
    assert bulk.is_bulk({}, {"a": 20_000})
    assert not bulk.is_bulk({}, {"a": 19_999})  # small: building the indexes again is not worth it
    assert not bulk.is_bulk({"a": 30_000}, {"a": 55_000})  # less than the library holds
    assert bulk.is_bulk({"a": 10_000, "b": 5}, {"a": 40_000, "b": 5, "c": 3})


def test_a_bulk_stream_gives_the_same_library_and_indexes(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    plain = joined(a, tmp_path / "plain", "P")
    fast = joined(a, tmp_path / "fast", "F")
    before = _indexes(fast)
    a.add_references({"title": f"Paper {i}", "year": str(1990 + i % 30), "journal": f"J {i % 7}"} for i in range(300))
    ids = [r for (r,) in a.db.execute("SELECT id FROM refs ORDER BY num LIMIT 3")]
    a.edit_reference(ids[0], {"title": "Renamed"})
    a.trash.put_many([ids[1]])
    seal(a)
    for library, is_bulk in ((plain, False), (fast, True)):
        stream = b"".join(frames.frame(w) for w in changesets_since(a, version_vector(library))) + frames.END
        library.close()
        total, seen = _receive(library.path, stream, is_bulk)
        assert total.applied > 0 and total.rejected == []
        # Away while the bulk stream ran (a reader opening the library meanwhile left them so),
        # never for the plain one.
        assert any(seen) == is_bulk
        if is_bulk:
            assert sorted(seen[-1]) == sorted(schema.DEFERRABLE_INDEXES)
    with Library.open(plain.path) as p, Library.open(fast.path) as f:
        assert _indexes(f) == before == _indexes(p)
        assert snapshot(f) == snapshot(p)
        assert f.db.execute("SELECT count(*) FROM meta WHERE key = ?", [schema.DEFERRED_BY]).fetchone()[0] == 0
        order = "SELECT id FROM refs INDEXED BY refs_by_title WHERE deleted = 0 AND trashed = 0 ORDER BY 1"
        assert f.db.execute(order).fetchall() == p.db.execute(order).fetchall()


def _receive(path: Path, stream: bytes, is_bulk: bool) -> tuple[ReceiveReport, list[list[str]]]:
    """receive_stream over `stream` in 4 KB pieces; before each piece, which deferrable indexes
    a reader opening the library finds missing."""
    total = ReceiveReport()
    seen: list[list[str]] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), 4096):
            with Library.open(path) as reader:  # what another process sees meanwhile
                seen.append(schema.missing_indexes(reader.db))
            yield stream[start : start + 4096]

    async def run() -> bool:
        worker = LibraryWorker(path)
        try:
            return await receive_stream(worker, chunks(), "A", total, bulk=is_bulk)
        finally:
            await worker.close()

    assert asyncio.run(run())
    return total, seen


def test_indexes_left_out_by_a_killed_receive_are_built_at_the_next_open(tmp_path: Path) -> None:
    library = founded(tmp_path / "a")
    library.add_references({"title": f"Paper {i}"} for i in range(50))
    before = _indexes(library)
    # A receiving process that is still running: its pid marks the indexes as away on purpose.
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        library.db.execute("BEGIN IMMEDIATE")
        for name in schema.DEFERRABLE_INDEXES:
            library.db.execute(f"DROP INDEX {name}")
        library.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [schema.DEFERRED_BY, str(runner.pid)])
        library.db.execute("COMMIT")
        library.close()
        with Library.open(tmp_path / "a") as again:
            assert sorted(schema.missing_indexes(again.db)) == sorted(schema.DEFERRABLE_INDEXES)
    finally:
        runner.kill()  # killed before it built them again
        runner.wait()
    with Library.open(tmp_path / "a") as again:
        assert _indexes(again) == before
        assert again.db.execute("SELECT count(*) FROM meta WHERE key = ?", [schema.DEFERRED_BY]).fetchone()[0] == 0
    assert re.search("refs_by_title", str(before))
