"""The library's name syncs: a rename on one device renames the library everywhere (the
operation library.name, one register: concurrent renames converge on the newest)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from p2psync.errors import InvalidValue
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli, replay, snapshot
from tests.sync_support import founded, joined, sync_all


@pytest.fixture
def three(tmp_path: Path) -> list[Library]:
    a = founded(tmp_path / "a", "Home")
    b = joined(a, tmp_path / "b", "Work")
    c = joined(a, tmp_path / "c", "Laptop")
    yield [a, b, c]
    for library in (a, b, c):
        library.close()


def test_a_rename_reaches_every_device(three: list[Library]) -> None:
    a, b, c = three
    assert [x.name for x in three] == ["Home", "Work", "Laptop"]  # each its own, until a rename
    assert b.rename("  Lab   library ") == "Lab library"
    assert b.name == "Lab library"
    sync_all(three)
    assert [x.name for x in three] == ["Lab library"] * 3
    assert [x.info()["name"] for x in three] == ["Lab library"] * 3
    assert snapshot(a)["library_name"] == snapshot(c)["library_name"]
    c.rename("Thesis")
    sync_libraries(c, a)
    sync_libraries(a, b)
    assert b.name == "Thesis"


def test_concurrent_renames_converge_on_the_newest(three: list[Library]) -> None:
    a, b, c = three
    # Each rename in a later millisecond than the one before (the clock counts milliseconds; two
    # in the same one tie, and the tie goes by device id): C's is the newest.
    for library, name in ((a, "From A"), (b, "From B"), (c, "From C")):
        time.sleep(0.003)
        library.rename(name)
    sync_libraries(a, b)
    assert a.name == b.name == "From B"
    sync_all(three)
    assert [x.name for x in three] == ["From C"] * 3
    assert snapshot(a)["library_name"] == snapshot(b)["library_name"] == snapshot(c)["library_name"]
    # A rename that has seen them all replaces them all.
    a.rename("Settled")
    sync_all(three)
    assert [x.name for x in three] == ["Settled"] * 3
    assert len(json.loads(a.db.execute("SELECT state FROM library_name").fetchone()[0])) == 1


def test_a_replayed_log_gives_the_same_name(tmp_path: Path) -> None:
    with Library.create(tmp_path / "a", "A") as library:
        library.rename("Renamed")
        replica = replay(library, tmp_path / "r")
        assert replica.name == "Renamed"
        replica.close()


def test_renaming_to_the_same_name_logs_nothing_and_bad_names_are_refused(tmp_path: Path) -> None:
    with Library.create(tmp_path / "a", "A") as library:
        library.rename("Lab")
        changes = library.info()["changes"]
        library.rename("Lab")
        assert library.info()["changes"] == changes
        for bad in ("", "   ", "x" * 201, "a\x00b", "a\x7fb"):
            with pytest.raises(InvalidValue):
                library.rename(bad)
        assert library.info()["changes"] == changes and library.name == "Lab"


def test_library_rename_on_the_command_line(tmp_path: Path) -> None:
    lib = ["--library", str(tmp_path / "lib")]
    assert cli("init", "--name", "Old", *lib).returncode == 0
    done = cli("library", "rename", "New  name", *lib, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "New name"
    assert json.loads(cli("info", *lib, "--json").stdout)["name"] == "New name"
    text = cli("library", "rename", "Newer", *lib)
    assert text.returncode == 0 and "Renamed the library to 'Newer'" in text.stdout
    bad = cli("library", "rename", "", *lib)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "library name" in bad.stderr
    assert json.loads(cli("info", *lib, "--json").stdout)["name"] == "Newer"
