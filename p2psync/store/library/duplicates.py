"""Duplicates to review: references of the library that are plainly the same as another one.

Nothing records duplicates when they arise (two devices adding the same paper, an import with
--allow-duplicates, a reference typed in twice), so they are found by the importer's own rule
(model/duplicates.py: a shared DOI, or title + year + first author, or every field equal): two
references in the library (not in the trash) that share a key are duplicates to review.

The keys need Python (Unicode normalising), so they cannot be an SQL index. Instead, SQL
triggers on `refs` (schema 13) queue every reference that is added, changed or removed in
`duplicate_backlog`, whoever wrote it (this process, the CLI, a sync); `catch_up` works out the
keys of the queued references, keeps them in `duplicate_keys`, and refreshes `duplicate_refs`
(the references sharing a key) for the keys that changed. Reading the duplicates is then one
indexed query, at any library size; catching up costs a batch of JSON parsing per 2,000 changed
references (once, after a large sync or import).
"""

from __future__ import annotations

import json

from p2psync.model.duplicates import duplicate_keys, identical_key
from p2psync.store.db import Database, write_transaction

BATCH = 2_000  # references per transaction: another writer waits at most one batch


def keys_of(data: str) -> list[str]:
    """The duplicate keys of a reference's data, as the importer makes them."""
    fields = json.loads(data)
    return [*duplicate_keys(fields), identical_key(fields)]


def catch_up(db: Database, most: int | None = None) -> int:
    """Work out the keys of the queued references (at most about `most`); return how many."""
    done = 0
    while most is None or done < most:
        with write_transaction(db):
            nums = [n for (n,) in db.execute("SELECT num FROM duplicate_backlog ORDER BY num LIMIT ?", [BATCH])]
            if not nums:
                return done
            _refresh(db, nums)
            db.conn.executemany("DELETE FROM duplicate_backlog WHERE num = ?", [(n,) for n in nums])
        done += len(nums)
    return done


def _refresh(db: Database, nums: list[int]) -> None:
    conn = db.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS duplicate_touched (key TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS duplicate_affected (num INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.duplicate_touched")
    conn.execute("DELETE FROM temp.duplicate_affected")
    conn.executemany("INSERT INTO temp.duplicate_affected (num) VALUES (?)", [(n,) for n in nums])
    # The keys they had: those who shared one may no longer be duplicates.
    conn.execute(
        "INSERT OR IGNORE INTO temp.duplicate_touched (key) "
        "SELECT key FROM duplicate_keys WHERE num IN temp.duplicate_affected"
    )
    conn.execute("DELETE FROM duplicate_keys WHERE num IN temp.duplicate_affected")
    found = conn.execute(
        "SELECT r.num, r.data FROM temp.duplicate_affected a CROSS JOIN refs r ON r.num = a.num "
        "WHERE r.deleted = 0 AND r.trashed = 0"
    ).fetchall()
    new_keys = [(key, num) for num, data in found for key in set(keys_of(data))]
    conn.executemany("INSERT OR IGNORE INTO duplicate_keys (key, num) VALUES (?, ?)", new_keys)
    conn.executemany("INSERT OR IGNORE INTO temp.duplicate_touched (key) VALUES (?)", [(k,) for k, _ in new_keys])
    # Whose standing may have changed: the queued references and everyone with a key they had or have.
    conn.execute(
        "INSERT OR IGNORE INTO temp.duplicate_affected (num) "
        "SELECT k.num FROM temp.duplicate_touched t CROSS JOIN duplicate_keys k ON k.key = t.key"
    )
    conn.execute("DELETE FROM duplicate_refs WHERE num IN temp.duplicate_affected")
    conn.execute(
        "INSERT OR IGNORE INTO duplicate_refs (num) "
        "SELECT mine.num FROM temp.duplicate_affected a CROSS JOIN duplicate_keys mine ON mine.num = a.num "
        "WHERE EXISTS (SELECT 1 FROM duplicate_keys other WHERE other.key = mine.key AND other.num != mine.num)"
    )


def pending(db: Database) -> int:
    """How many references wait for their keys."""
    return int(db.execute("SELECT count(*) FROM duplicate_backlog").fetchone()[0])
