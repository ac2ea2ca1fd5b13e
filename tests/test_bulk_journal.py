"""A big receive switches the library to a rollback journal while no one else is using it
(store/db.bulk_journal) and puts WAL back at the end; the library is the same as with WAL, other
connections keep working, and a process killed in the middle leaves a library that opens and
finishes the sync."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from p2psync.store import db as store_db
from p2psync.store import sync
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal
from tests.support import snapshot
from tests.sync_support import founded


def _sender(tmp_path: Path, count: int) -> Library:
    a = founded(tmp_path / "a")
    a.add_references([{"title": f"Paper {i}", "abstract": "words " * 50, "year": "2020"} for i in range(count)])
    seal(a)
    return a


def _modes_at_commits(monkeypatch: Any) -> list[str]:
    modes: list[str] = []
    real_commit = sync.commit

    def commit(db: Any, deadline: float) -> None:
        modes.append(db.conn.execute("PRAGMA journal_mode").fetchone()[0])
        real_commit(db, deadline)

    monkeypatch.setattr(sync, "commit", commit)
    return modes


def test_a_big_receive_uses_a_rollback_journal_then_wal_again(tmp_path: Path, monkeypatch: Any) -> None:
    a = _sender(tmp_path, 2000)
    plain = Library.create(tmp_path / "plain", found=False, library_id=a.library_id)
    assert receive(plain, changesets_since(a, {})).rejected == []  # one commit: no switch

    monkeypatch.setattr(sync, "COMMIT_ENTRIES", 400)
    modes = _modes_at_commits(monkeypatch)
    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    report = receive(b, changesets_since(a, {}))
    assert report.rejected == [] and b.info()["references"] == 2000
    assert modes[0] == "wal" and set(modes[1:]) == {"truncate"}, modes
    assert b.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert snapshot(b) == snapshot(plain)


def test_stays_in_wal_while_another_connection_reads(tmp_path: Path, monkeypatch: Any) -> None:
    a = _sender(tmp_path, 1200)
    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    reader = sqlite3.connect(b.path / "library.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM refs").fetchone()  # holds a read transaction open
    monkeypatch.setattr(sync, "COMMIT_ENTRIES", 400)
    modes = _modes_at_commits(monkeypatch)
    started = time.monotonic()
    assert receive(b, changesets_since(a, {})).rejected == []
    assert time.monotonic() - started < store_db.BUSY_TIMEOUT_MS / 1000  # did not wait for the reader
    assert set(modes) == {"wal"}
    assert reader.execute("SELECT count(*) FROM refs").fetchone()[0] == 0  # its snapshot, undisturbed
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM refs").fetchone()[0] == 1200
    reader.close()


def test_a_library_opened_during_the_bulk_write_works(tmp_path: Path) -> None:
    a = _sender(tmp_path, 10)
    with store_db.bulk_journal(a.db) as switch:
        assert switch()
        assert a.db.execute("PRAGMA journal_mode").fetchone()[0] == "truncate"
        store_db.begin_immediate(a.db)
        a.db.execute("INSERT INTO sync_problems (peer, at, reason, message) VALUES ('p', 1, 'r', 'm')")
        started = time.monotonic()
        other = Library.open(a.path)  # cannot switch it back to WAL now, and does not wait for it
        assert time.monotonic() - started < 2
        assert other.info()["references"] == 10
        store_db.commit(a.db, time.monotonic() + 5)
    assert a.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.db.execute("SELECT count(*) FROM sync_problems").fetchone()[0] == 1
    other.add_reference({"title": "written by the other connection"})
    assert a.info()["references"] == 11
    other.close()


RECEIVER = textwrap.dedent(
    """
    import pickle, sys, time
    from pathlib import Path
    from p2psync.store import sync
    from p2psync.store.library import Library
    wires = pickle.loads(Path(sys.argv[2]).read_bytes())
    sync.COMMIT_ENTRIES = 200
    real_commit = sync.commit
    def commit(db, deadline):
        real_commit(db, deadline)
        mode = db.conn.execute("PRAGMA journal_mode").fetchone()[0]
        print(mode, flush=True)
        time.sleep(0.05)
    sync.commit = commit
    sync.receive(Library.open(Path(sys.argv[1])), wires)
    print("finished", flush=True)
    """
)


def test_sigkill_during_a_bulk_receive(tmp_path: Path) -> None:
    a = _sender(tmp_path, 3000)
    wires = list(changesets_since(a, {}))
    (tmp_path / "wires.pickle").write_bytes(pickle.dumps(wires))
    Library.create(tmp_path / "b", found=False, library_id=a.library_id).close()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(tmp_path / "b"), str(tmp_path / "wires.pickle")],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[1:] == [b"truncate", b"truncate"], lines  # killed in the middle, journal in use
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    b = Library.open(tmp_path / "b")
    assert b.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert b.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    part = b.info()["references"]
    assert 0 < part < 3000
    report = receive(b, wires)  # the next sync finishes the job: what landed counts as duplicates
    assert report.rejected == [] and report.duplicates > 0
    assert b.info()["references"] == 3000
    assert snapshot(b)["refs"] == snapshot(a)["refs"]
    b.close()
