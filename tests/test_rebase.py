"""Joining another library by pairing (store/rebase.py), in process: an empty library becomes a
copy; a non-empty one is merged without losing or silently doubling anything; a crash between
the two steps loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.store import rebase
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.sync_support import digest, founded


def titles(library: Library, trashed: bool = False) -> list[str]:
    return sorted(r["title"] for r in library.list_references(trashed=trashed))


def join(home: Library, work: Library) -> rebase.MergeReport | None:
    """What pairing does, without the network: rebase, membership, sync, merge, sync."""
    rebase.rebase(work, home.library_id, home.name)
    home.add_device(work.identity().public_bytes, "work")
    sync_libraries(home, work)
    report = rebase.finish_merge(work)
    sync_libraries(home, work)
    return report


def test_an_empty_library_becomes_a_copy(tmp_path: Path) -> None:
    home = founded(tmp_path / "home", "Home")
    home.add_reference({"title": "Kept", "year": "2001"})
    work = Library.create(tmp_path / "work", "Work")
    assert rebase.is_empty(work)
    assert not rebase.is_empty(home)
    assert join(home, work) is None  # nothing to merge
    assert work.library_id == home.library_id
    assert work.name == "Home"
    assert digest(work) == digest(home)
    assert [d["name"] for d in work.devices()][-1] == "work"


def test_two_full_libraries_merge_without_doubling(tmp_path: Path) -> None:
    home = founded(tmp_path / "home", "Home")
    work = Library.create(tmp_path / "work", "Work")
    shared_doi = {"title": "Paper one", "doi": "10.1000/ONE", "year": "2020"}
    home.add_reference(shared_doi)
    home.add_reference({"title": "Only at home", "year": "1999", "authors": [{"family": "Curie", "given": "M"}]})
    home.add_reference({"title": "Same title", "year": "2010", "authors": [{"family": "Noether"}], "volume": "3"})
    # work: the same DOI (adds a field home lacks), the same title+year+author with a differing
    # field (kept twice, listed for review), new references, one in the trash, a group, a file.
    one = work.add_reference({"title": "Paper one", "doi": "10.1000/one", "year": "2020", "pages": "1-9"})
    work.add_reference({"title": "Same TITLE", "year": "2010", "authors": [{"family": "Noether"}], "volume": "4"})
    new = work.add_reference({"title": "Only at work", "year": "2024"})
    gone = work.add_reference({"title": "Trashed at work", "year": "2023"})
    work.trash_reference(gone)
    work.create_group("Reading")
    work.add_to_group("Reading", [one, new])
    pdf = tmp_path / "one.pdf"
    pdf.write_bytes(b"%PDF-1.4 one")
    work.attach(one, pdf)
    before = rebase.content(work)
    assert before.references == 4 and before.groups == 1 and before.attachments == 1

    report = join(home, work)

    assert report is not None
    assert [m["title"] for m in report.merged] == ["Paper one"]
    assert [m["title"] for m in report.to_review] == ["Same TITLE"]
    assert report.added == 3  # the review copy, "Only at work", the trashed one
    for library in (home, work):
        assert titles(library) == ["Only at home", "Only at work", "Paper one", "Same TITLE", "Same title"]
        assert titles(library, trashed=True) == ["Trashed at work"]
        merged = next(r for r in library.list_references() if r["title"] == "Paper one")
        assert merged["pages"] == "1-9" and merged["doi"] == "10.1000/ONE"  # home's value, work's extra field
        groups = {g["name"]: g["references"] for g in library.list_groups()}
        assert groups["Reading"] == 2 and groups[rebase.REVIEW_GROUP] == 2
        files = library.list_attachments(merged["id"], scan=False)
        assert [(f["name"], f["size"]) for f in files] == [("one.pdf", 12)]
    assert digest(home) == digest(work)
    merged_id = next(r["id"] for r in work.list_references() if r["title"] == "Paper one")
    assert work.attachment_file(merged_id, "one.pdf").read_bytes() == b"%PDF-1.4 one"
    assert not rebase.merge_pending(work)


def test_a_crash_between_rebase_and_merge_loses_nothing(tmp_path: Path) -> None:
    home = founded(tmp_path / "home", "Home")
    home.add_reference({"title": "At home", "year": "2000"})
    work = Library.create(tmp_path / "work", "Work")
    work.add_reference({"title": "At work", "year": "2001"})
    rebase.rebase(work, home.library_id, home.name)
    work.close()  # "crash": the stash is all there is of work's content now
    work = Library.open(tmp_path / "work")
    assert rebase.merge_pending(work)
    assert titles(work) == []
    home.add_device(work.identity().public_bytes, "work")
    sync_libraries(home, work)
    rebase.finish_merge(work)
    sync_libraries(home, work)
    assert titles(home) == titles(work) == ["At home", "At work"]


def test_rebase_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = Library.create(tmp_path / "work", "Work")
    work.add_reference({"title": "At work", "year": "2001"})
    before = digest(work)
    library_id = work.library_id
    monkeypatch.setattr(rebase, "_EMPTIED", (*rebase._EMPTIED, "no_such_table"))
    with pytest.raises(Exception):  # noqa: B017 (the failure itself does not matter, only that nothing changed)
        rebase.rebase(work, "x" * 16, "Other")
    assert work.library_id == library_id and digest(work) == before and not rebase.merge_pending(work)
