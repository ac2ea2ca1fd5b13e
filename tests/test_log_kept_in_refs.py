"""A received ref.put that created a reference keeps its text once, in the reference's row
(store/logtext.py). Whatever happens to the reference afterwards, the log must read exactly as
it arrived, and the change sets this library sends on must be the bytes their authors signed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2psync.store import logtext
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal, sync_libraries, version_vector
from tests.support import replay, snapshot
from tests.sync_support import digest, founded, joined


def _kept(library: Library) -> int:
    return int(library.db.execute("SELECT count(*) FROM changelog WHERE op = ''").fetchone()[0])


def _origins(library: Library) -> int:
    return int(library.db.execute("SELECT count(*) FROM refs WHERE origin IS NOT NULL").fetchone()[0])


def _received(tmp_path: Path, refs: int = 5) -> tuple[Library, Library, list[str]]:
    a = founded(tmp_path / "a")
    ids = [
        a.add_reference({"title": f"Paper {i}", "authors": ["Müller, Jörg"], "abstract": 'A "quoted"\nline é'})
        for i in range(refs)
    ]
    b = joined(a, tmp_path / "b", "B")
    return a, b, ids


def test_a_first_sync_keeps_new_references_once(tmp_path: Path) -> None:
    a, b, ids = _received(tmp_path)
    assert _kept(b) == len(ids) == _origins(b)
    assert _kept(a) == 0  # local writes keep their log rows whole
    # The log reads as it arrived, and what b sends on is byte for byte what a signed.
    assert list(b.log_entries()) == list(a.log_entries())
    assert list(changesets_since(b, {})) == list(changesets_since(a, {}))
    assert snapshot(b)["changelog"] == snapshot(a)["changelog"]


def test_every_kind_of_change_puts_the_entry_back_first(tmp_path: Path) -> None:
    a, b, ids = _received(tmp_path, refs=6)
    sent = list(changesets_since(a, {}))
    b.edit_reference(ids[0], {"title": "Edited here"})
    b.trash_reference(ids[1])
    b.trash_reference(ids[2])
    b.empty_trash()  # permanent delete
    group = b.create_group("G")
    b.add_to_group(group, [ids[3]])  # membership: the reference row itself does not change
    a.edit_reference(ids[4], {"year": "2001"})  # a remote edit, received
    sync_libraries(a, b)
    assert _kept(b) == _origins(b) == 2  # ids[3] and ids[5] are untouched rows
    assert {r for (r,) in b.db.execute("SELECT id FROM refs WHERE origin IS NOT NULL")} == {ids[3], ids[5]}
    # The first change sets still go out exactly as signed, and both libraries agree.
    assert list(changesets_since(b, {}))[: len(sent)] == sent
    assert digest(a) == digest(b)
    assert sorted(b.log_entries()) == sorted(a.log_entries())


def test_forwarding_from_a_library_that_kept_entries(tmp_path: Path) -> None:
    a, b, ids = _received(tmp_path)
    b.edit_reference(ids[0], {"title": "B's title"})
    seal(b)
    c = Library.create(tmp_path / "c", found=False, library_id=a.library_id)
    report = receive(c, changesets_since(b, version_vector(c)))  # a's change sets, via b only
    assert report.rejected == [] and report.waiting == 0
    assert digest(c) == digest(b)
    # c kept a's entries once too, until b's edit of one of them arrived and put it back.
    assert _kept(c) == len(ids) - 1 and list(c.log_entries()) == list(b.log_entries())


def test_replaying_the_log_gives_the_same_tables(tmp_path: Path) -> None:
    _a, b, ids = _received(tmp_path)
    b.edit_reference(ids[1], {"title": "Changed"})
    replica = replay(b, tmp_path / "replica")
    assert snapshot(replica) == snapshot(b) | {"changelog": snapshot(replica)["changelog"]}
    assert snapshot(replica)["changelog"] == snapshot(b)["changelog"]


def test_a_new_reference_with_a_field_cleared_to_null_is_kept_whole(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    with a.writing() as writer:  # what no local command writes, but a peer may
        writer.log({"op": "ref.put", "ref": "bbbbbbbbbbbbbbbb", "fields": {"type": "book", "year": None}, "seen": {}})
    a.add_references([{"title": "t", "year": "2020"}])
    seal(a)
    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    receive(b, changesets_since(a, {}))
    assert _kept(b) == 1 and _origins(b) == 1  # the data {"type": "book"} is not the entry's fields
    assert list(changesets_since(b, {})) == list(changesets_since(a, {}))
    assert digest(a) == digest(b)


def test_the_database_refuses_to_change_a_row_that_holds_a_log_entry(tmp_path: Path) -> None:
    _a, b, ids = _received(tmp_path, refs=2)
    db = b.db.conn
    with pytest.raises(sqlite3.IntegrityError, match="log entry"):
        db.execute("UPDATE refs SET data = '{}' WHERE id = ?", [ids[0]])
    with pytest.raises(sqlite3.IntegrityError, match="log entry"):
        db.execute("DELETE FROM refs WHERE id = ?", [ids[0]])
    before = list(b.log_entries())
    (origin,) = db.execute("SELECT origin FROM refs WHERE id = ?", [ids[0]]).fetchone()
    logtext.restore(b.db, origin)  # what apply does first; then the row may change
    db.execute("UPDATE refs SET data = '{}' WHERE id = ?", [ids[0]])
    assert list(b.log_entries()) == before
    # Emptying the log before the references (a rebase) is allowed.
    db.execute("BEGIN")
    db.execute("DELETE FROM changelog")
    db.execute("DELETE FROM refs")
    db.execute("ROLLBACK")
