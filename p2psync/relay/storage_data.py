"""The change-set and chunk half of SqliteStorage (relay/storage.py), mixed into it: the same
database, lock, transactions and blob files.

A push checks every item against its device's head in one transaction (a gap or an overlap
refuses the whole request, an exact duplicate is counted), checks the quota and the key epoch,
writes the blobs (fsynced, content-named) and only then the index rows; a failure takes back the
files it made. A pull pages by `num`, skipping items whose blob file is gone. Chunks are stored
once per account and id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import RLock
from typing import TYPE_CHECKING

from p2psync.errors import Conflict, P2PSyncError
from p2psync.relay.storage_keys import EpochMoved


class Gap(Conflict):
    """A change set that does not follow its device's head: nothing of the request is stored.
    `head` is what the relay holds of that device (before the request)."""

    def __init__(self, device: str, head: int, first: int) -> None:
        super().__init__(
            f"The change set of device {device} starting at {first} does not follow the one before it "
            f"(the relay holds that device's change sets up to {head}); nothing of this request was stored."
        )
        self.device, self.head, self.first = device, head, first


class QuotaExceeded(P2PSyncError):
    def __init__(self, used: int, quota: int, needed: int) -> None:
        super().__init__(
            f"Storing {needed} more bytes would take the account over its quota of {quota} bytes "
            f"({used} used); nothing of this request was stored."
        )
        self.used, self.quota, self.needed = used, quota, needed


@dataclass(frozen=True)
class ChangeSetIn:
    device: str
    first: int
    last: int
    blob: bytes
    key_epoch: int = 0


@dataclass(frozen=True)
class StoredChangeSet:
    num: int
    device: str
    first: int
    last: int
    blob: bytes
    key_epoch: int = 0


@dataclass(frozen=True)
class PushResult:
    stored: int
    duplicates: int
    last_num: int


def plan_push(
    items: Sequence[ChangeSetIn],
    heads: dict[str, int],
    key_epoch: int,
    holds: Callable[[ChangeSetIn, Sequence[ChangeSetIn]], bool],
) -> tuple[list[ChangeSetIn], int]:
    """The rule of a push, for every backend: which items are new (in order) and how many are
    duplicates; `heads` (each pushed device's stored head) is moved on to the new heads. `holds`
    says whether exactly this change set is stored or comes earlier in `fresh`. Gap or EpochMoved
    refuses the whole request."""
    stored = dict(heads)
    fresh: list[ChangeSetIn] = []
    duplicates = 0
    for item in items:
        # Each device's change sets continue exactly where its stored ones end; a duplicate is
        # exactly a stored one. Anything else (a gap, an overlap, another cut) is refused whole.
        head = heads[item.device]
        if item.first == head + 1:
            if item.key_epoch != key_epoch:
                raise EpochMoved(key_epoch, f"New change sets are encrypted with the key of epoch {key_epoch}.")
            heads[item.device] = item.last
            fresh.append(item)
        elif item.last <= head and holds(item, fresh):
            duplicates += 1
        else:
            raise Gap(item.device, stored[item.device], item.first)
    return fresh, duplicates


def held_earlier(item: ChangeSetIn, fresh: Sequence[ChangeSetIn]) -> bool:
    """Whether exactly this change set (device, first, last) comes earlier in the request."""
    return any((f.device, f.first, f.last) == (item.device, item.first, item.last) for f in fresh)


def check_quota(used: int, quota: int | None, needed: int) -> None:
    if quota is not None and used + needed > quota:
        raise QuotaExceeded(used, quota, needed)


class ChangeSetStorage:
    """State, push and pull of change sets; have, put and get of chunks."""

    db: sqlite3.Connection
    _lock: RLock

    if TYPE_CHECKING:

        def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def _store_blobs(self, account: str, epoch: int, blobs: Sequence[bytes], created: list[Path]) -> list[str]: ...

        @staticmethod
        def _take_back(created: list[Path]) -> None: ...

        def _read_blob(self, account: str, relative: str) -> bytes | None: ...

    def state(self, account: str) -> tuple[dict[str, int], int]:
        with self._lock:
            heads = dict(self.db.execute("SELECT device, last FROM heads WHERE account = ?", [account]).fetchall())
            next_num = self.db.execute("SELECT next_num FROM accounts WHERE id = ?", [account]).fetchone()[0]
        return heads, next_num - 1

    def push(self, account: str, items: Sequence[ChangeSetIn], quota: int | None) -> PushResult:
        with self._lock:
            created: list[Path] = []
            try:
                with self._tx() as db:
                    result = self._push(db, account, items, quota, created)
            except BaseException:
                self._take_back(created)
                raise
        return result

    def _push(
        self, db: sqlite3.Connection, account: str, items: Sequence[ChangeSetIn], quota: int | None, created: list[Path]
    ) -> PushResult:
        devices = sorted({item.device for item in items})
        heads: dict[str, int] = {}
        for device in devices:
            row = db.execute("SELECT last FROM heads WHERE account = ? AND device = ?", [account, device]).fetchone()
            heads[device] = row[0] if row else 0
        used, next_num, epoch, key_epoch = db.execute(
            "SELECT used_bytes, next_num, epoch, key_epoch FROM accounts WHERE id = ?", [account]
        ).fetchone()
        fresh, duplicates = plan_push(items, heads, key_epoch, lambda item, done: self._holds(db, account, item, done))
        needed = sum(len(item.blob) for item in fresh)
        check_quota(used, quota, needed)
        if not fresh:
            return PushResult(0, duplicates, next_num - 1)
        names = self._store_blobs(account, epoch, [item.blob for item in fresh], created)
        db.executemany(
            "INSERT INTO changesets (account, num, device, first, last, size, blob, key_epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (account, next_num + i, item.device, item.first, item.last, len(item.blob), name, item.key_epoch)
                for i, (item, name) in enumerate(zip(fresh, names, strict=True))
            ],
        )
        db.executemany(
            "INSERT INTO heads (account, device, last) VALUES (?, ?, ?) "
            "ON CONFLICT (account, device) DO UPDATE SET last = excluded.last",
            [(account, device, heads[device]) for device in devices],
        )
        last_num = next_num + len(fresh) - 1
        db.execute(
            "UPDATE accounts SET used_bytes = used_bytes + ?, next_num = ? WHERE id = ?",
            [needed, last_num + 1, account],
        )
        return PushResult(len(fresh), duplicates, last_num)

    @staticmethod
    def _holds(db: sqlite3.Connection, account: str, item: ChangeSetIn, fresh: Sequence[ChangeSetIn]) -> bool:
        """Whether exactly this change set (device, first, last) is stored or comes earlier in the request."""
        if held_earlier(item, fresh):
            return True
        row = db.execute(
            "SELECT last FROM changesets WHERE account = ? AND device = ? AND first = ?",
            [account, item.device, item.first],
        ).fetchone()
        return row is not None and row[0] == item.last

    def pull(self, account: str, after: int, limit: int, max_bytes: int) -> tuple[list[StoredChangeSet], bool]:
        with self._lock:
            rows = self.db.execute(
                "SELECT num, device, first, last, size, blob, key_epoch FROM changesets WHERE account = ? AND num > ? "
                "ORDER BY num LIMIT ?",
                [account, after, limit + 1],
            ).fetchall()
            items: list[StoredChangeSet] = []
            total = consumed = 0
            for num, device, first, last, size, name, key_epoch in rows[:limit]:
                if items and total + size > max_bytes:
                    break
                consumed += 1
                blob = self._read_blob(account, name)
                if blob is None:
                    continue
                items.append(StoredChangeSet(num, device, first, last, blob, key_epoch))
                total += size
        more = len(rows) > consumed
        if not items and more:  # every blob of this page is gone: go on past them, never answer an empty page
            return self.pull(account, rows[consumed - 1][0], limit, max_bytes)
        return items, more

    # --- chunks --------------------------------------------------------------------------------

    def have_chunks(self, account: str, ids: Sequence[str]) -> list[bool]:
        with self._lock:
            present: set[str] = set()
            unique = sorted(set(ids))
            for start in range(0, len(unique), 500):  # within SQLite's limit on bound parameters
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                present.update(
                    r[0]
                    for r in self.db.execute(
                        f"SELECT id FROM chunks WHERE account = ? AND id IN ({marks})", [account, *part]
                    )
                )
        return [i in present for i in ids]

    def put_chunk(self, account: str, chunk_id: str, blob: bytes, quota: int | None, key_epoch: int = 0) -> bool:
        with self._lock:
            created: list[Path] = []
            try:
                with self._tx() as db:
                    if db.execute("SELECT 1 FROM chunks WHERE account = ? AND id = ?", [account, chunk_id]).fetchone():
                        return False
                    used, epoch, current = db.execute(
                        "SELECT used_bytes, epoch, key_epoch FROM accounts WHERE id = ?", [account]
                    ).fetchone()
                    if key_epoch != current:
                        raise EpochMoved(current, f"New chunks are encrypted with the key of epoch {current}.")
                    check_quota(used, quota, len(blob))
                    (name,) = self._store_blobs(account, epoch, [blob], created)
                    db.execute(
                        "INSERT INTO chunks (account, id, size, blob, key_epoch) VALUES (?, ?, ?, ?, ?)",
                        [account, chunk_id, len(blob), name, key_epoch],
                    )
                    db.execute("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?", [len(blob), account])
            except BaseException:
                self._take_back(created)
                raise
        return True

    def get_chunk(self, account: str, chunk_id: str) -> tuple[bytes, int] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT blob, key_epoch FROM chunks WHERE account = ? AND id = ?", [account, chunk_id]
            ).fetchone()
            blob = self._read_blob(account, row[0]) if row else None
            return (blob, row[1]) if blob is not None else None
