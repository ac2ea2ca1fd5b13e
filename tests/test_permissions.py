"""A library's secrets are readable by its owner only (issue 18, item 7, the local half).

The library folder is 0700; its database (with its -wal, -shm and -journal files, which SQLite
creates with the database's own mode), the device key and every backup are 0600, whatever the
umask. A library made by an older version (0755 folder, 0644 database) is tightened when opened.
Attachment files keep what the user's umask gives them: the folder above them is closed anyway.
Every test runs under a umask of 022, the usual default that gave 0755 and 0644 before.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.store import backup as backups
from p2psync.store.db import bulk_journal
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.sync_support import founded, joined
from tests.test_cli import Cli


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def modes(folder: Path) -> dict[str, int]:
    """The library folder and every file of its own (not attachments), by name."""
    out = {".": mode(folder)}
    for path in folder.iterdir():
        if path.is_file():
            out[path.name] = mode(path)
    return out


def private(folder: Path, *extra: str) -> dict[str, int]:
    """What `modes` must say: the folder 0700, the database, its companions and the key 0600."""
    names = ["library.sqlite3", "device.key", *extra]
    return {".": 0o700, **{name: 0o600 for name in names}}


def test_a_new_library_and_its_database_files_are_private(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    a.add_reference({"title": "Secret plans"})
    # While open in WAL mode, the -wal and -shm files exist beside the database.
    assert modes(a.path) == private(a.path, "library.sqlite3-wal", "library.sqlite3-shm")
    b = joined(a, tmp_path / "b", "B")  # a library made to receive one (pairing, a relay login)
    sync_libraries(a, b)
    for library in (a, b):
        assert modes(library.path) == private(library.path, "library.sqlite3-wal", "library.sqlite3-shm")
    b.close()
    assert modes(tmp_path / "b") == private(tmp_path / "b")


def test_the_rollback_journal_of_a_bulk_receive_is_private(tmp_path: Path) -> None:
    library = founded(tmp_path / "a")
    other = Library.open(tmp_path / "a")
    other.close()
    with bulk_journal(library.db) as switch:
        assert switch()  # no other connection: the library uses a rollback journal now
        library.add_references({"title": f"Paper {i}"} for i in range(50))
        journal = library.path / "library.sqlite3-journal"
        assert journal.exists() and mode(journal) == 0o600
    library.close()


def test_backups_and_restored_libraries_are_private(tmp_path: Path) -> None:
    library = founded(tmp_path / "lib")
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(1000))
    ref = library.add_reference({"title": "With a file"})
    library.attach(ref, pdf)
    manifest = backups.backup(library, tmp_path / "backups" / "lib.zip")
    assert mode(Path(manifest["path"])) == 0o600  # it holds the device key
    backups.restore(tmp_path / "backups" / "lib.zip", tmp_path / "restored")
    assert modes(tmp_path / "restored") == private(tmp_path / "restored")
    # Attachments keep what the umask gives, inside the closed folder.
    assert mode(tmp_path / "restored" / "attachments" / ref / "paper.pdf") == 0o644
    library.close()


def test_an_older_library_is_made_private_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old"
    library = founded(path)
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n")
    ref = library.add_reference({"title": "Paper"})
    library.attach(ref, pdf)
    library.close()
    attachment = path / "attachments" / ref / "paper.pdf"
    # As versions before this one left it: open to everyone on the machine; and another process
    # (an older daemon, say) has it open, so the -wal and -shm files exist too.
    holder = sqlite3.connect(path / "library.sqlite3")
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('held', '1')")
    for file in (path / "library.sqlite3", path / "library.sqlite3-wal", path / "library.sqlite3-shm"):
        os.chmod(file, 0o644)
    os.chmod(path / "device.key", 0o644)
    os.chmod(path, 0o755)
    os.chmod(attachment, 0o664)
    try:
        with Library.open(path) as opened:
            assert opened.name
            assert modes(path) == private(path, "library.sqlite3-wal", "library.sqlite3-shm")
    finally:
        holder.close()
    assert mode(attachment) == 0o664  # the user's file is left as it was
    assert modes(path) == private(path)


def test_init_and_backup_from_the_command_line(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = Cli(tmp_path, tmp_path / "papers", tmp_path_factory.mktemp("pycache"))
    cli.ok("init", "--name", "Papers")
    cli.ok("ref", "add", "--title", "One")
    assert modes(tmp_path / "papers") == private(tmp_path / "papers")
    (tmp_path / "out").mkdir()
    backup = cli.json("backup", "--out", tmp_path / "out")
    assert mode(Path(backup["path"])) == 0o600
