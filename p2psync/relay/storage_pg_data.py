"""The change-set and chunk half of PostgresStorage (storage_pg.py), mixed into it.

The rules are storage_data.py's (plan_push, check_quota), applied under the account row's lock:
two pushes of one account, through any processes, run one after another, and the second sees
the heads, counters and bytes the first committed. Blobs go through the BlobStore in the same
transaction. A pull reads its page and the page's blobs in one snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from p2psync.relay.storage_data import (
    ChangeSetIn,
    PushResult,
    StoredChangeSet,
    check_quota,
    held_earlier,
    plan_push,
)
from p2psync.relay.storage_keys import EpochMoved

if TYPE_CHECKING:
    from p2psync.relay.storage_blobs import BlobStore

T = TypeVar("T")
Cursor = Any  # a psycopg cursor


class PgChangeSets:
    """State, push and pull of change sets; have, put and get of chunks."""

    blobs: BlobStore

    if TYPE_CHECKING:

        def _run(self, work: Callable[[Cursor], T], snapshot: bool = False) -> T: ...

        @staticmethod
        def _lock_account(cur: Cursor, account: str, columns: str) -> tuple[Any, ...]: ...

    def state(self, account: str) -> tuple[dict[str, int], int]:
        def work(cur: Cursor) -> tuple[dict[str, int], int]:
            heads = dict(cur.execute("SELECT device, last FROM heads WHERE account = %s", [account]).fetchall())
            (next_num,) = cur.execute("SELECT next_num FROM accounts WHERE id = %s", [account]).fetchone()
            return heads, next_num - 1

        return self._run(work, snapshot=True)

    def push(self, account: str, items: Sequence[ChangeSetIn], quota: int | None) -> PushResult:
        return self._run(lambda cur: self._push(cur, account, items, quota))

    def _push(self, cur: Cursor, account: str, items: Sequence[ChangeSetIn], quota: int | None) -> PushResult:
        used, next_num, epoch, key_epoch = self._lock_account(cur, account, "used_bytes, next_num, epoch, key_epoch")
        devices = sorted({item.device for item in items})
        heads = dict.fromkeys(devices, 0)
        heads.update(
            cur.execute(
                "SELECT device, last FROM heads WHERE account = %s AND device = ANY(%s)", [account, devices]
            ).fetchall()
        )
        fresh, duplicates = plan_push(items, heads, key_epoch, lambda item, done: _holds(cur, account, item, done))
        needed = sum(len(item.blob) for item in fresh)
        check_quota(used, quota, needed)
        if not fresh:
            return PushResult(0, duplicates, next_num - 1)
        names = self.blobs.put(cur, account, epoch, [item.blob for item in fresh])
        cur.executemany(
            "INSERT INTO changesets (account, num, device, first, last, size, blob, key_epoch) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (account, next_num + i, item.device, item.first, item.last, len(item.blob), name, item.key_epoch)
                for i, (item, name) in enumerate(zip(fresh, names, strict=True))
            ],
        )
        cur.executemany(
            "INSERT INTO heads (account, device, last) VALUES (%s, %s, %s) "
            "ON CONFLICT (account, device) DO UPDATE SET last = excluded.last",
            [(account, device, heads[device]) for device in devices],
        )
        last_num = next_num + len(fresh) - 1
        cur.execute(
            "UPDATE accounts SET used_bytes = used_bytes + %s, next_num = %s WHERE id = %s",
            [needed, last_num + 1, account],
        )
        return PushResult(len(fresh), duplicates, last_num)

    def pull(self, account: str, after: int, limit: int, max_bytes: int) -> tuple[list[StoredChangeSet], bool]:
        def work(cur: Cursor) -> tuple[list[StoredChangeSet], bool, int]:
            rows = cur.execute(
                "SELECT num, device, first, last, size, blob, key_epoch FROM changesets "
                "WHERE account = %s AND num > %s ORDER BY num LIMIT %s",
                [account, after, limit + 1],
            ).fetchall()
            page: list[tuple[Any, ...]] = []
            total = 0
            for row in rows[:limit]:
                if page and total + row[4] > max_bytes:
                    break
                page.append(row)
                total += row[4]
            found = self.blobs.get(cur, account, [row[5] for row in page])
            items = [
                StoredChangeSet(num, device, first, last, found[name], key_epoch)
                for num, device, first, last, _size, name, key_epoch in page
                if name in found  # a blob gone from the store: left out, as SqliteStorage does
            ]
            return items, len(rows) > len(page), page[-1][0] if page else after

        items, more, last_read = self._run(work, snapshot=True)
        if not items and more:  # every blob of this page is gone: go on past them, never answer an empty page
            return self.pull(account, last_read, limit, max_bytes)
        return items, more

    # --- chunks --------------------------------------------------------------------------------

    def have_chunks(self, account: str, ids: Sequence[str]) -> list[bool]:
        present = {
            row[0]
            for row in self._run(
                lambda cur: cur.execute(
                    "SELECT id FROM chunks WHERE account = %s AND id = ANY(%s)", [account, sorted(set(ids))]
                ).fetchall()
            )
        }
        return [i in present for i in ids]

    def put_chunk(self, account: str, chunk_id: str, blob: bytes, quota: int | None, key_epoch: int = 0) -> bool:
        def work(cur: Cursor) -> bool:
            used, epoch, current = self._lock_account(cur, account, "used_bytes, epoch, key_epoch")
            if cur.execute("SELECT 1 FROM chunks WHERE account = %s AND id = %s", [account, chunk_id]).fetchone():
                return False
            if key_epoch != current:
                raise EpochMoved(current, f"New chunks are encrypted with the key of epoch {current}.")
            check_quota(used, quota, len(blob))
            (name,) = self.blobs.put(cur, account, epoch, [blob])
            cur.execute(
                "INSERT INTO chunks (account, id, size, blob, key_epoch) VALUES (%s, %s, %s, %s, %s)",
                [account, chunk_id, len(blob), name, key_epoch],
            )
            cur.execute("UPDATE accounts SET used_bytes = used_bytes + %s WHERE id = %s", [len(blob), account])
            return True

        return self._run(work)

    def get_chunk(self, account: str, chunk_id: str) -> tuple[bytes, int] | None:
        def work(cur: Cursor) -> tuple[bytes, int] | None:
            row = cur.execute(
                "SELECT blob, key_epoch FROM chunks WHERE account = %s AND id = %s", [account, chunk_id]
            ).fetchone()
            if row is None:
                return None
            blob = self.blobs.get(cur, account, [row[0]]).get(row[0])
            return (blob, row[1]) if blob is not None else None

        return self._run(work, snapshot=True)


def _holds(cur: Cursor, account: str, item: ChangeSetIn, fresh: Sequence[ChangeSetIn]) -> bool:
    """Whether exactly this change set (device, first, last) is stored or comes earlier in the request."""
    if held_earlier(item, fresh):
        return True
    row = cur.execute(
        "SELECT last FROM changesets WHERE account = %s AND device = %s AND first = %s",
        [account, item.device, item.first],
    ).fetchone()
    return row is not None and row[0] == item.last
