"""The search index of a first sync built on the other core during the receive
(store/search_build.py): the index it leaves must be exactly the one indexing the backlog
afterwards leaves (every word instance, every row's size, so every search and its order), and
anything going wrong must cost only time."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from p2psync.store import search_build
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal, version_vector
from tests.sync_support import founded

WORDS = ["paper", "müller", "muller", "edited", "original", "neuro", "x", "zeta", "smith", "keyword", "note"]


def _founder(tmp_path: Path) -> Library:
    """A library whose log creates references and then changes some of them (so that a first
    sync hands rows to the build that later change sets edit, trash or delete)."""
    a = founded(tmp_path / "a")
    refs = a.add_references(
        [
            {
                "title": f"Paper {i} original {'neuron' if i % 3 else 'zeta'}",
                "authors": [{"family": "Müller" if i % 2 else "Smith", "given": "Ann"}],
                "abstract": "word " * (i % 50) + f"x{i % 7}",
                "keywords": ["keyword", f"k{i % 5}"],
                "notes": "note" if i % 4 == 0 else None,
                "year": "2020",
            }
            for i in range(400)
        ]
    )
    for ref in refs[:30]:
        a.edit_reference(ref, {"title": "Edited title", "notes": "a note added"})
    a.trash_reference(refs[40])
    a.trash_reference(refs[41])
    a.empty_trash()
    a.trash_reference(refs[42])  # in the trash: indexed, found with trashed=True
    seal(a)  # (a change set of its own for what follows)
    a.add_references([{"title": f"Late paper {i} zeta"} for i in range(50)])
    seal(a)
    return a


def _empty_member(a: Library, path: Path, name: str) -> Library:
    b = Library.create(path, name, found=False, library_id=a.library_id)
    a.add_device(b.identity().public_bytes, name)
    seal(a)
    return b


def _index(library: Library) -> dict[str, Any]:
    """Everything the search index holds, and every search's answer in order."""
    db = library.db
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.words USING fts5vocab(main, refs_fts, instance)")
    searches = {
        (word, trashed): [r.id for r in library.refs.search(word, trashed=trashed)]
        for word in WORDS
        for trashed in (False, True)
    }
    assert db.execute("INSERT INTO refs_fts (refs_fts, rank) VALUES ('integrity-check', 0)").fetchall() == []
    return {
        "instances": db.execute("SELECT * FROM temp.words ORDER BY 1, 2, 3, 4").fetchall(),
        "sizes": db.execute("SELECT id, sz FROM refs_fts_docsize ORDER BY id").fetchall(),
        "searches": searches,
        "backlog": library.search_backlog(),
    }


def _received(a: Library, path: Path, monkeypatch: pytest.MonkeyPatch, build: bool) -> Library:
    b = _empty_member(a, path, path.name)
    monkeypatch.setattr(search_build, "BUILD_AFTER_BYTES", 0 if build else 1 << 60)
    report = receive(b, list(changesets_since(a, version_vector(b))), parallel=False)
    assert report.rejected == []
    assert search_build.running(b.db) == build
    return b


def test_an_index_built_beside_the_receive_is_the_one_built_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _founder(tmp_path)
    built = _received(a, tmp_path / "built", monkeypatch, build=True)
    later = _received(a, tmp_path / "later", monkeypatch, build=False)
    built_backlog = built.search_backlog()
    done = list(built.refs.catch_up_search())
    assert done[0] > 300  # the build's part comes first, at once; the changed ones after it
    assert sum(done) == built_backlog
    assert _index(built) == _index(later) == _reindexed(later)
    assert _index(built)["searches"][("edited", False)]  # found by the words they have now...
    assert len(_index(built)["searches"][("original", False)]) == 400 - 30 - 3  # ...not by those they had
    assert list(built.path.glob(".search-build-*")) == []


def test_a_build_that_dies_costs_only_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _founder(tmp_path)
    built = _received(a, tmp_path / "built", monkeypatch, build=True)
    search_build._builds[built.db].process.kill()
    later = _received(a, tmp_path / "later", monkeypatch, build=False)
    assert _index(built) == _index(later)
    assert list(built.path.glob(".search-build-*")) == []


def test_an_index_written_meanwhile_elsewhere_drops_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _founder(tmp_path)
    built = _received(a, tmp_path / "built", monkeypatch, build=True)
    with Library.open(built.path) as other:  # another process searches first: it indexes the backlog
        assert list(other.refs.search("zeta"))
    assert next(built.refs.catch_up_search(), 0) == 0  # nothing copied: the index was not empty
    later = _received(a, tmp_path / "later", monkeypatch, build=False)
    assert _index(built) == _index(later)


def _reindexed(library: Library) -> dict[str, Any]:
    """_index after indexing the whole library again from nothing, the way the backlog does."""
    db = library.db
    with db.conn:
        db.execute("INSERT INTO refs_fts (refs_fts) VALUES ('delete-all')")
        db.execute("INSERT OR IGNORE INTO search_backlog (num) SELECT num FROM refs WHERE deleted = 0")
    return _index(library)


def test_a_reference_changed_by_another_connection_meanwhile_is_indexed_as_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _founder(tmp_path)
    built = _received(a, tmp_path / "built", monkeypatch, build=True)
    with Library.open(built.path) as other:  # `ref edit` in another process, between two batches
        [ref] = [r.id for r in other.refs.listing() if r.title == "Paper 123 original zeta"]
        other.edit_reference(ref, {"title": "Changed elsewhere"})
    assert next(built.refs.catch_up_search()) > 300  # the build came in, without that one
    index = _index(built)
    assert index["searches"][("smith", False)]
    assert [r.id for r in built.refs.search("elsewhere")] == [ref]
    assert [r.id for r in built.refs.search("paper 123")] == []
    assert index == _reindexed(built)


def test_a_change_set_rejected_after_its_rows_were_handed_over_drops_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _founder(tmp_path)
    wires = []
    for path in ("built", "later"):
        b = _empty_member(a, tmp_path / path, path)
        wires = list(changesets_since(a, version_vector(b)))
        b.close()
    # A change set whose signature does not check, after ones that created references: the
    # rows of the references it creates are undone (its savepoint rolls back).
    bad = next(i for i, wire in enumerate(wires) if b"Late paper" in wire)
    wires[bad] = wires[bad].replace(b'"sig":"', b'"sig":"AAAA', 1)
    results = []
    for path, build in (("built", True), ("later", False)):
        monkeypatch.setattr(search_build, "BUILD_AFTER_BYTES", 0 if build else 1 << 60)
        with Library.open(tmp_path / path) as b:
            report = receive(b, wires, parallel=False)
            assert report.rejected[0]["reason"] == "signature"
            assert not search_build.running(b.db)
            results.append(_index(b))
    assert results[0] == results[1]
    assert results[0]["searches"][("paper", False)]


def test_closing_the_library_brings_the_build_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`p2psync sync` and `pair CODE` close the connection that received before they index."""
    a = _founder(tmp_path)
    built = _received(a, tmp_path / "built", monkeypatch, build=True)
    process = search_build._builds[built.db].process
    backlog = built.search_backlog()
    built.close()
    assert process.poll() is not None
    with Library.open(tmp_path / "built") as again:
        assert 0 < again.search_backlog() < backlog / 4  # what changed after it was handed over
        later = _received(a, tmp_path / "later", monkeypatch, build=False)
        assert _index(again) == _index(later)
    assert list((tmp_path / "built").glob(".search-build-*")) == []


def test_dropping_a_build_whose_child_stopped_reading_is_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback drops the build at once, even with the queue to the child full."""
    monkeypatch.setattr(search_build, "FINISH_SECONDS", 20.0)
    library = founded(tmp_path / "lib")
    search_build.start(library.db, library.path)
    build = search_build._builds[library.db]
    build.process.send_signal(signal.SIGSTOP)  # it reads nothing more: the pipe, then the queue, fill up
    text = "x" * 100_000
    feeder = threading.Thread(target=lambda: [build.add(i * 10 + 1, [text] * 10) for i in range(40)], daemon=True)
    feeder.start()
    feeder.join(timeout=5)  # blocked on the full queue by now
    started = time.monotonic()
    search_build.drop(library.db)
    assert time.monotonic() - started < 10
    assert build.process.poll() is not None
