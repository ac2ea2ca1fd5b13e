"""Opening the library's SQLite file and running transactions on it.

WAL mode lets readers run while one process writes. Writers take the write lock up front
(BEGIN IMMEDIATE) so two processes never deadlock upgrading a read to a write, and a writer that
finds the lock taken waits (busy timeout, then retries) instead of telling the user "database is
locked". synchronous=FULL: a committed change survives a power cut, not only a killed process.

The database holds the relay token and the library key, so it is 0600: created so here before
SQLite opens it, and tightened if an earlier version left it 0644. SQLite creates the -wal, -shm
and -journal files with the database's own mode; those already there are tightened too.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from p2psync.errors import DiskFull, LibraryBusy, LibraryCorrupt
from p2psync.store.files import create_private, keep_private

BUSY_TIMEOUT_MS = 10_000
WRITE_WAIT_SECONDS = 600.0  # give up only after ten minutes of someone else holding the lock


COMPANIONS = ("-wal", "-shm", "-journal")  # files SQLite keeps beside the database


class Database:
    """The library's connection, in autocommit mode (transactions are explicit, see below).

    It replaces sqlite_utils.Database, of which the store used only `execute`, `conn` and `close`: importing
    sqlite-utils cost about 50 ms on every command (pluggy, an entry-point scan, dateutil).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters) if parameters is not None else self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # as sqlite_utils did: leaving `with db:` closes the connection


def connect(path: Path) -> Database:
    with contextlib.suppress(OSError):  # (SQLite then says why it cannot open the file)
        create_private(path)
    for suffix in COMPANIONS:
        keep_private(path.with_name(path.name + suffix))
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        # Takes effect only on a new, empty file: 16 KB pages hold several 2-3 KB reference rows
        # where 4 KB pages would hold one and waste the rest.
        conn.execute("PRAGMA page_size = 16384")
        _use_wal(conn)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")  # 32 MB: bulk inserts into big indexes
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc, path.parent):  # WAL needs room for its shared-memory file to open
            raise DiskFull(path.parent) from None
        raise LibraryCorrupt(f"The library database {path} cannot be opened ({exc}).") from None
    return Database(conn)


def _use_wal(conn: sqlite3.Connection) -> None:
    """WAL mode, unless another connection is inside a bulk receive that uses a rollback journal
    (bulk_journal): that one puts WAL back when it ends, and this connection works meanwhile."""
    conn.execute("PRAGMA busy_timeout = 200")
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as exc:
        if not _is_busy(exc):
            raise


@contextlib.contextmanager
def bulk_journal(db: Database) -> Iterator[Callable[[], bool]]:
    """For a receive that writes hundreds of megabytes: yields a function that, called between
    transactions, switches the library to a rollback journal if no other connection is reading or
    writing it at that moment, and says whether it did. On leaving, the library is put back in WAL mode.

    SQLite's own advice: WAL suits small transactions; for transactions of more than about 100 MB
    a rollback journal is faster, since pages appended to the file need no journal copy, where
    WAL writes every page twice (log, then checkpoint). Measured on a 100k-reference first sync:
    the commits take 0.5 s instead of 1.2 s (docs/performance.md). Just as crash-safe: a killed
    process leaves a hot journal that the next open rolls back."""
    conn = db.conn
    switched = False

    def switch() -> bool:
        nonlocal switched
        if not switched and not conn.in_transaction:
            conn.execute("PRAGMA busy_timeout = 0")  # someone else has it open: stay in WAL, at once
            try:
                switched = conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0] == "truncate"
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return switched

    try:
        yield switch
    finally:
        if switched and not conn.in_transaction:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:  # busy, or no room: the next open puts it back
                if not (_is_busy(exc) or is_disk_full(exc)):
                    raise


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def is_disk_full(exc: BaseException, folder: Path | None = None) -> bool:
    """SQLite's "database or disk is full", or the operating system's ENOSPC/EDQUOT. With the
    folder, also an I/O error while that disk has (almost) no room: SQLite reports a failed
    write to its shared-memory or journal file as "disk I/O error"."""
    if isinstance(exc, sqlite3.Error):
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
            return True
        io_error = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_IOERR
        return io_error and folder is not None and _nearly_full(folder)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


NEARLY_FULL = 1024 * 1024  # below this much free space, an I/O error is taken for a full disk


def folder_of(db: Database) -> Path | None:
    row = db.conn.execute("PRAGMA database_list").fetchone()
    return Path(row[2]).parent if row and row[2] else None


def disk_full(db: Database, need_bytes: int | None = None) -> DiskFull:
    """The error for a full disk under this database: it names the library folder."""
    return DiskFull(folder_of(db) or "the library", need_bytes)


def rollback(db: Database) -> None:
    """Undo the open transaction, if SQLite has not undone it already (it does, on a full disk)."""
    if db.conn.in_transaction:
        db.conn.execute("ROLLBACK")


@contextlib.contextmanager
def write_transaction(db: Database, wait: float = WRITE_WAIT_SECONDS) -> Iterator[None]:
    """One atomic write: everything inside commits together or not at all."""
    deadline = begin_immediate(db, wait)
    try:
        yield
    except BaseException as exc:
        rollback(db)
        if is_disk_full(exc, folder_of(db)):
            raise disk_full(db) from None
        raise
    else:
        commit(db, deadline)


def begin_immediate(db: Database, wait: float = WRITE_WAIT_SECONDS) -> float:
    """Take the write lock (waiting for another writer up to `wait` seconds); returns the deadline
    that commit() keeps to. Prefer write_transaction; this is for work that commits in batches."""
    conn = db.conn
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return deadline
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise LibraryBusy(
                    "Another p2psync process has been writing to this library for too long; "
                    "wait for it to finish and try again."
                ) from None


def commit(db: Database, deadline: float) -> None:
    conn = db.conn
    while True:
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc, folder_of(db)):
                rollback(db)
                raise disk_full(db) from None
            if not _is_busy(exc) or time.monotonic() >= deadline:
                rollback(db)
                raise LibraryBusy("The library stayed busy; your change was not saved. Try again.") from None
