"""Building the search index of a first sync on the other core, while the sync receives.

A bulk receive writes new references without their search rows (apply.insert_new_refs queues
them in `search_backlog`), and indexing them afterwards cost more than the receive itself: 5.5 CPU
seconds for 100,000 references (decoding each fields text, working out its words, FTS5's own
tokenising and writing), all on the receiving process's one core. So when a large receive starts
on a library that holds no reference at all (a first sync, or an empty library joining by
`pair`), a child process (`SearchBuild`) builds the index meanwhile, on the other core, in a
database file of its own (SQLite allows one writer per file, and the receive is it): the
receiver hands it the row number and fields text of each batch of new references as it inserts
them, and the child indexes them with apply.search_row into an FTS5 table defined exactly as
`refs_fts` is, keeping beside each row the fields text it indexed. (So the build's file holds
about 2.5 KB a reference until it is brought in: pair_join's check for room counts it.)

`finish` (References.catch_up_search, so before any search) waits for the child, then, in one
transaction and on a connection of its own, if the library's index is still empty: takes out of
the built index every row whose reference changed or went since it was handed over (its fields
text is not the one indexed), copies the built index's FTS5 tables (`_data`, `_idx`,
`_docsize`: the same SQLite writes them in the same format for the same definition) into
`refs_fts`'s, and takes the references it holds out of the backlog. The backlog indexes whatever
is left, as before. A connection of its own, because FTS5 caches an index's structure per
connection and notices only other connections' commits (PRAGMA data_version).

The build only ever saves time: if the child cannot start or fails, if a change set is rolled
back after its rows were handed over (row numbers may then be used again), or if the index was
written meanwhile (a search in another process indexed the backlog), the build is dropped and
the backlog indexes everything. tests/test_search_build.py holds the results equal both ways.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import queue
import sqlite3
import subprocess
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from p2psync.engine.canonical import loads
from p2psync.errors import P2PSyncError
from p2psync.store import child_process
from p2psync.store.db import Database, write_transaction

BUILD_AFTER_BYTES = 8 * 1024 * 1024  # smaller first syncs index afterwards: a child takes ~0.2 s to start
FINISH_SECONDS = 600.0  # the child's work is at most what indexing the backlog would be
QUEUED = 8  # batches handed over but not yet written to the child (each ~1 MB): bounds memory
_SHADOW = ("data", "idx", "docsize")  # FTS5's tables of a contentless index with column sizes
_PREFIX = ".search-build-"
_INSERT = "INSERT INTO refs_fts (rowid, title, authors, abstract, keywords, notes) VALUES (?, ?, ?, ?, ?, ?)"

# The build under way for a library connection (one at a time), by its Database object.
_builds: weakref.WeakKeyDictionary[Database, SearchBuild] = weakref.WeakKeyDictionary()


# --- the child ------------------------------------------------------------------------------------


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: the build file and refs_fts's definition, then batches (first row number, fields
    texts) until stdin ends; then commits and says b"ok"."""
    from p2psync.store.apply import search_row

    gc.disable()  # millions of small containers, none in cycles (as in sync.receive)
    path, create = marshal.loads(child_process.read_frame(stdin) or b"")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = OFF")  # a scratch file: dropped whole if anything fails
    con.execute("PRAGMA synchronous = OFF")
    con.execute(create)
    # No merging of segments while building: 10 to 18 % less CPU (docs/performance.md). The setting
    # stays here (FTS5 keeps it in _config, which is not copied); the library's index merges its
    # segments with its own later writes, as it always does.
    con.execute("INSERT INTO refs_fts (refs_fts, rank) VALUES ('automerge', 0)")
    con.execute("CREATE TABLE texts (num INTEGER PRIMARY KEY, data TEXT NOT NULL)")
    con.execute("BEGIN")
    while (frame := child_process.read_frame(stdin)) is not None:
        first, texts = marshal.loads(frame)
        numbered = list(enumerate(texts, first))
        con.executemany("INSERT INTO texts (num, data) VALUES (?, CAST(? AS TEXT))", numbered)
        con.executemany(_INSERT, [(num, *search_row(loads(text))) for num, text in numbered])
    con.execute("COMMIT")
    con.close()
    child_process.write_frame(stdout, b"ok")


# --- the receiver's side --------------------------------------------------------------------------


class SearchBuild:
    """The child that builds a first sync's index, and the thread that feeds it (a pipe blocks;
    the thread waits without the interpreter lock, and the queue keeps the receiver from waiting
    unless the child falls QUEUED batches behind)."""

    def __init__(self, db: Database, folder: Path) -> None:
        self.path = folder / f"{_PREFIX}{os.getpid()}.sqlite3"
        _remove(self.path)
        create = db.execute("SELECT sql FROM sqlite_master WHERE name = 'refs_fts'").fetchone()[0]
        self.process = child_process.start("search_build")
        self.handed: set[int] = set()  # the first row number of every batch handed over
        self.failed = False
        self._outbox: queue.Queue[bytes | None] = queue.Queue(QUEUED)
        self._outbox.put(marshal.dumps((str(self.path), create)))
        self._writer = threading.Thread(target=self._write, name="p2psync-search-build", daemon=True)
        self._writer.start()

    def add(self, first: int, texts: list[bytes | str]) -> None:
        """Index references first, first + 1, ... with these fields texts (as refs.data holds them)."""
        if not self.failed:
            self._outbox.put(marshal.dumps((first, texts)))

    def drop(self) -> None:
        self.failed = True
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its handle
        # The writer drains the queue once its write to the killed child fails, so there is room
        # for the end mark within moments (without it, it would wait on the queue for ever).
        with contextlib.suppress(queue.Full):
            self._outbox.put(None, timeout=10)
        self._end()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)  # reaped: no zombie left behind by a dropped build

    def wait(self) -> bool:
        """Let the child index what it was given and commit; whether it did."""
        if self.failed:
            return False
        self._outbox.put(None)
        try:
            self.process.wait(timeout=FINISH_SECONDS)
        except subprocess.TimeoutExpired:
            self.drop()
            return False
        assert self.process.stdout is not None
        ok = self.process.returncode == 0 and child_process.read_frame(self.process.stdout) == b"ok"  # type: ignore[arg-type]
        self._end()
        return ok

    def _end(self) -> None:
        self._writer.join(timeout=FINISH_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (item := self._outbox.get()) is not None:
                child_process.write_frame(stdin, item)  # type: ignore[arg-type]
        except OSError:  # the child has gone: wait() finds no b"ok"
            self.failed = True
            while self._outbox.get() is not None:  # let add() go on without blocking
                pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()


def running(db: Database) -> bool:
    return db in _builds


def start(db: Database, folder: Path) -> None:
    """Build the index beside a receive into this library (sync.receive decides when: a first
    sync, once BUILD_AFTER_BYTES have come). References inserted before are left to the backlog."""
    if db in _builds:
        return
    _remove_stale(folder)
    with contextlib.suppress(OSError):  # no interpreter to start (an embedded Python): index afterwards
        _builds[db] = SearchBuild(db, folder)


def add(db: Database, first: int, texts: list[bytes | str]) -> None:
    """New references first.. were inserted with these fields texts (apply.insert_new_refs)."""
    build = _builds.get(db)
    if build is not None:
        build.add(first, texts)


def drop(db: Database) -> None:
    """Rows handed over may be undone (a rollback): the backlog indexes everything instead."""
    build = _builds.pop(db, None)
    if build is not None:
        build.drop()
        _remove(build.path)


def finish(db: Database, db_path: Path) -> int:
    """Bring a finished build into the library's index; return how many references it indexed."""
    build = _builds.pop(db, None)
    if build is None:
        return 0
    try:
        return _copy(db_path, build.path) if build.wait() else 0
    finally:
        _remove(build.path)


def close(db: Database, db_path: Path) -> None:
    """The library is being closed: bring its build in if it can be (a command that syncs, then
    indexes what is left, closes the connection that received in between), else drop it."""
    if db not in _builds:
        return
    if not db.conn.in_transaction:  # (else the copy would wait for this very connection's lock)
        with contextlib.suppress(P2PSyncError, sqlite3.Error, OSError):  # the backlog has it all
            finish(db, db_path)
    drop(db)


def _copy(db_path: Path, built: Path) -> int:
    from p2psync.store.apply import search_row
    from p2psync.store.db import connect

    other = connect(db_path)  # see the module's docstring: FTS5 caches per connection
    try:
        other.execute("ATTACH DATABASE ? AS built", [str(built)])
        with write_transaction(other):
            if other.execute("SELECT 1 FROM main.refs_fts_docsize LIMIT 1").fetchone() is not None:
                return 0  # indexed meanwhile (by another process): the backlog does the rest
            stale = other.execute(
                "SELECT t.num, t.data FROM built.texts t LEFT JOIN main.refs r ON r.num = t.num "
                "LEFT JOIN main.search_backlog b ON b.num = t.num "
                "WHERE r.num IS NULL OR r.deleted OR b.num IS NULL OR r.data IS NOT t.data"
            ).fetchall()
            other.conn.executemany(
                "INSERT INTO built.refs_fts (refs_fts, rowid, title, authors, abstract, keywords, notes) "
                "VALUES ('delete', ?, ?, ?, ?, ?, ?)",
                [(num, *search_row(loads(data))) for num, data in stale],
            )
            other.conn.executemany("DELETE FROM built.texts WHERE num = ?", [(num,) for num, _ in stale])
            for table in _SHADOW:
                other.execute(f"DELETE FROM main.refs_fts_{table}")
                other.execute(f"INSERT INTO main.refs_fts_{table} SELECT * FROM built.refs_fts_{table}")
            done = other.execute("DELETE FROM main.search_backlog WHERE num IN (SELECT num FROM built.texts)")
            return done.rowcount
    finally:
        other.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-journal"):
        with contextlib.suppress(OSError):
            os.remove(f"{path}{suffix}")


def _remove_stale(folder: Path) -> None:
    """Build files left by a process that ended before finishing (killed, or closed mid-sync)."""
    for path in _stale_candidates(folder):
        pid = path.name.removeprefix(_PREFIX).split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(path)


def _stale_candidates(folder: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        yield from folder.glob(f"{_PREFIX}*.sqlite3")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
