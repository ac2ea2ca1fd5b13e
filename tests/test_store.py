"""The library on one machine, through its Python API: real SQLite files in tmp_path."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from p2psync.errors import (
    AmbiguousId,
    Conflict,
    FileProblem,
    InvalidValue,
    LibraryExists,
    LibraryNotFound,
    UnknownAttachment,
    UnknownField,
    UnknownGroup,
    UnknownReference,
)
from p2psync.store.library import Library
from tests.support import replay, snapshot


@pytest.fixture
def library(tmp_path: Path) -> Library:
    lib = Library.create(tmp_path / "lib", "Test")
    yield lib
    lib.close()


def test_create_refuses_existing_and_open_refuses_missing(tmp_path: Path) -> None:
    Library.create(tmp_path / "a").close()
    with pytest.raises(LibraryExists):
        Library.create(tmp_path / "a")
    with pytest.raises(LibraryNotFound, match="p2psync init"):
        Library.open(tmp_path / "nothing")


def test_device_key_is_owner_only_and_id_matches(library: Library) -> None:
    mode = stat.S_IMODE(os.stat(library.path / "device.key").st_mode)
    assert mode == 0o600
    assert library.identity().device_id == library.device_id
    [me] = library.devices()
    assert me["device_id"] == library.device_id and me["introducer"] is None and me["this_device"]
    assert library.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_show_edit_and_clear(library: Library) -> None:
    logged = library.info()["changes"]  # init logged this device's membership
    ref = library.add_reference(
        {
            "title": "Über Neuronen",
            "authors": [{"family": "Müller", "given": "Jürgen"}, {"literal": "WHO"}],
            "year": "2021",
            "doi": "https://doi.org/10.1000/ABC",
            "keywords": ["brain", "brain", " neurons "],
        }
    )
    record = library.get_reference(ref)
    assert record["doi"] == "10.1000/ABC"
    assert record["keywords"] == ["brain", "neurons"]
    assert record["type"] == "journal_article"
    assert library.edit_reference(ref[:6], {"volume": "12", "year": None}) is True
    record = library.get_reference(ref)
    assert record["volume"] == "12" and "year" not in record
    assert library.edit_reference(ref, {"volume": "12"}) is False  # no-op edits are not logged
    assert library.info()["changes"] == logged + 2


@pytest.mark.parametrize(
    "values, error",
    [
        ({"title": "x", "colour": "red"}, UnknownField),
        ({"title": "x", "year": "twenty"}, InvalidValue),
        ({"title": "x", "date": "2021-13-01"}, InvalidValue),
        ({"title": "x", "doi": "doi.org/abc"}, InvalidValue),
        ({"title": "x", "type": "blog"}, InvalidValue),
        ({"title": "x" * 5000}, InvalidValue),
        ({"title": "x", "authors": "Smith"}, InvalidValue),
    ],
)
def test_bad_values_change_nothing(library: Library, values: dict, error: type) -> None:
    before = snapshot(library)
    with pytest.raises(error):
        library.add_reference(values)
    assert snapshot(library) == before


def test_unknown_field_lists_known_ones(library: Library) -> None:
    with pytest.raises(UnknownField, match="Known fields: type, title"):
        library.add_reference({"colour": "red"})


def test_id_prefixes(library: Library) -> None:
    a = library.add_reference({"title": "A"})
    assert library.resolve_ref(a[:8]) == a
    with pytest.raises(UnknownReference):
        library.resolve_ref("zzzzzzzz")
    with pytest.raises(UnknownReference):
        library.resolve_ref("not an id!")
    ids = [a] + [library.add_reference({"title": "B"}) for _ in range(40)]
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)  # 41 ids, 32 letters: one repeats
    with pytest.raises(AmbiguousId):
        library.resolve_ref(shared)


def test_trash_restore_and_empty(library: Library) -> None:
    keep = library.add_reference({"title": "Keep"})
    gone = library.add_reference({"title": "Gone"})
    group = library.create_group("Reading")
    library.add_to_group(group, [gone, keep])
    assert library.trash_reference(gone) is True
    assert library.trash_reference(gone) is False
    assert [r["id"] for r in library.list_references()] == [keep]
    assert [r["id"] for r in library.list_references(trashed=True)] == [gone]
    library.restore_reference(gone)
    with pytest.raises(Conflict):
        library.restore_reference(gone)
    library.trash_reference(gone)
    assert library.empty_trash() == 1
    assert library.list_groups()[0]["references"] == 1
    with pytest.raises(UnknownReference):
        library.get_reference(gone)
    assert library.db.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 1
    # The membership stays, hidden: keeping the reference after a delete-vs-edit conflict
    # brings back its groups too.
    assert library.db.execute("SELECT count(*) FROM memberships").fetchone()[0] == 2
    assert library.count_references(group=group) == 1


def test_groups(library: Library) -> None:
    a = library.add_reference({"title": "A"})
    g = library.create_group("  Reading   list ")
    assert library.find_group("reading list")["id"] == g
    with pytest.raises(Conflict):
        library.create_group("READING LIST")
    with pytest.raises(Conflict):
        library.create_group("sync conflicts")
    assert library.add_to_group("Reading list", [a, a]) == 1
    assert library.add_to_group("Reading list", [a]) == 0
    library.rename_group("Reading list", "To read")
    assert [x["name"] for x in library.get_reference(a)["groups"]] == ["To read"]
    assert [r["id"] for r in library.list_references(group="To read")] == [a]
    assert library.remove_from_group("To read", [a]) == 1
    assert library.count_references(group="To read") == 0
    library.delete_group("To read")
    with pytest.raises(UnknownGroup):
        library.find_group("To read")
    assert library.get_reference(a)["title"] == "A"


def test_search_fts(library: Library) -> None:
    a = library.add_reference({"title": "Neuronal plasticity", "authors": [{"family": "Müller"}]})
    b = library.add_reference({"title": "Other", "abstract": "About synaptic plasticity.", "keywords": ["cortex"]})
    library.add_reference({"title": "Unrelated", "notes": "nothing"})
    assert {r["id"] for r in library.search("plastic")} == {a, b}
    assert [r["id"] for r in library.search("muller neur")] == [a]
    assert [r["id"] for r in library.search("cortex")] == [b]
    assert list(library.search('"; DROP TABLE refs; --')) == []
    library.edit_reference(a, {"title": "Something else"})
    assert [r["id"] for r in library.search("neuronal")] == []
    library.trash_reference(b)
    assert list(library.search("synaptic")) == []
    assert [r["id"] for r in library.search("synaptic", trashed=True)] == [b]


def test_list_pagination_streams(library: Library) -> None:
    ids = library.add_references({"title": f"T{i}"} for i in range(1203))
    listed = [r["id"] for r in library.list_references()]
    assert listed == ids  # oldest first, in the order added
    assert [r["id"] for r in library.list_references(limit=10, offset=1195)] == ids[1195:]


def test_attachments_roundtrip_and_in_place_change(library: Library, tmp_path: Path) -> None:
    ref = library.add_reference({"title": "With PDF"})
    pdf = tmp_path / "Smith 2020 – été.pdf"
    pdf.write_bytes(os.urandom(300_000))
    result = library.attach(ref, pdf)
    where = library.attachment_path(ref, pdf.name)
    assert where == library.path / "attachments" / ref / pdf.name
    assert where.read_bytes() == pdf.read_bytes()
    out = library.export_attachment(ref, pdf.name, tmp_path / "out.pdf")
    assert Path(out["path"]).read_bytes() == pdf.read_bytes() and out["sha256"] == result["sha256"]

    time.sleep(0.01)
    with where.open("ab") as handle:  # a PDF reader saving an annotation in place
        handle.write(b"%annotation")
    changes = library.scan_attachments()
    assert changes == [{"ref": ref, "name": pdf.name, "change": "modified", "size": 300_011}]
    [item] = library.list_attachments(ref)
    assert item["size"] == 300_011 and item["present"]
    assert library.scan_attachments() == []  # noticed once
    ops = [op for *_, op in library.log_entries() if op["op"] == "attachment.put"]
    assert len(ops) == 2 and ops[1]["seen"] == [[library.device_id, ops and _seq_of_first_put(library)]]

    where.unlink()
    assert library.scan_attachments() == [{"ref": ref, "name": pdf.name, "change": "missing"}]
    assert library.list_attachments(ref)[0]["present"] is False  # missing is reported, not deleted
    with pytest.raises(UnknownAttachment):
        library.attachment_path(ref, pdf.name)


def _seq_of_first_put(library: Library) -> int:
    return next(seq for _, seq, _, op in library.log_entries() if op["op"] == "attachment.put")


def test_attachment_replace_remove_and_bad_names(library: Library, tmp_path: Path) -> None:
    ref = library.add_reference({"title": "x"})
    f = tmp_path / "a.pdf"
    f.write_bytes(b"one")
    library.attach(ref, f)
    f.write_bytes(b"two!")
    library.attach(ref, f)
    assert library.list_attachments(ref)[0]["size"] == 4
    library.attach(ref, f)  # same content again: nothing new to log
    assert sum(1 for *_, op in library.log_entries() if op["op"] == "attachment.put") == 2
    with pytest.raises(InvalidValue):
        library.attach(ref, f, name="../escape.pdf")
    with pytest.raises(FileProblem):
        library.attach(ref, tmp_path / "missing.pdf")
    library.remove_attachment(ref, "a.pdf")
    assert library.list_attachments(ref) == []
    assert not (library.path / "attachments" / ref).exists()
    with pytest.raises(UnknownAttachment):
        library.remove_attachment(ref, "a.pdf")
    assert not list((library.path / "attachments").rglob(".p2psync-*"))


def test_replay_gives_identical_tables(library: Library, tmp_path: Path) -> None:
    a = library.add_reference({"title": "A", "authors": [{"family": "X"}]})
    b = library.add_reference({"title": "B"})
    g = library.create_group("G")
    library.add_to_group(g, [a, b])
    library.edit_reference(a, {"title": "A2", "abstract": "text"})
    library.remove_from_group(g, [b])
    library.trash_reference(b)
    library.empty_trash()
    f = tmp_path / "f.pdf"
    f.write_bytes(b"pdf")
    library.attach(a, f)
    replica = replay(library, tmp_path / "replica")
    assert snapshot(replica) == snapshot(library)
    assert replica.ingest(library.log_entries()) == 0  # idempotent
    assert snapshot(replica) == snapshot(library)
