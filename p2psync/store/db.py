"""Opening the library's SQLite file and running transactions on it.

WAL mode lets readers run while one process writes. Writers take the write lock up front
(BEGIN IMMEDIATE) so two processes never deadlock upgrading a read to a write, and a writer that
finds the lock taken waits (busy timeout, then retries) instead of telling the user "database is
locked". synchronous=FULL: a committed change survives a power cut, not only a killed process.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from p2psync.errors import LibraryBusy, LibraryCorrupt

BUSY_TIMEOUT_MS = 10_000
WRITE_WAIT_SECONDS = 600.0  # give up only after ten minutes of someone else holding the lock


def connect(path: Path) -> sqlite_utils.Database:
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Takes effect only on a new, empty file: 16 KB pages hold several 2-3 KB reference rows
        # where 4 KB pages would hold one and waste the rest.
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")  # 32 MB: bulk inserts into big indexes
    except sqlite3.DatabaseError as exc:
        raise LibraryCorrupt(f"The library database {path} cannot be opened ({exc}).") from None
    return sqlite_utils.Database(conn)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database, wait: float = WRITE_WAIT_SECONDS) -> Iterator[None]:
    """One atomic write: everything inside commits together or not at all."""
    deadline = begin_immediate(db, wait)
    try:
        yield
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    else:
        commit(db, deadline)


def begin_immediate(db: sqlite_utils.Database, wait: float = WRITE_WAIT_SECONDS) -> float:
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


def commit(db: sqlite_utils.Database, deadline: float) -> None:
    conn = db.conn
    while True:
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                conn.execute("ROLLBACK")
                raise LibraryBusy("The library stayed busy; your change was not saved. Try again.") from None
