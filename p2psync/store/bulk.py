"""Receiving far more than the library holds (a first sync): the random-order sort indexes.

A first sync of 1,000,000 references inserts each into the sort indexes of the library list
(schema.DEFERRABLE_INDEXES) at a random place: once those indexes outgrow SQLite's page cache,
every commit rewrites most of their pages, so the cost per reference grows with the library
(measured: 100,000 references, 15 s of CPU with them, 5.5 s without and 1.3 s to build them
after; docs/performance.md, "Scale"). Such a receive drops them first and builds them at its
end, each in one sorted pass. While they are away the list still answers, by scanning.

A crash in between leaves them out; the next Library.open builds them again (schema.migrate),
unless the process that dropped them (its pid is in meta) is still running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from p2psync.store import schema
from p2psync.store.db import write_transaction
from p2psync.store.library import Library

# Worth it only for a receive of at least this many entries, and more than the library holds
# (then building the indexes again costs less than the receive saves).
BULK_ENTRIES = 20_000


def is_bulk(mine: Mapping[str, int], theirs: Mapping[str, int]) -> bool:
    """Whether pulling what `theirs` has beyond `mine` (version vectors) is a bulk receive."""
    missing = sum(max(0, last - mine.get(device, 0)) for device, last in theirs.items())
    return missing >= BULK_ENTRIES and missing > sum(mine.values())


def defer_indexes(library: Library) -> list[str]:
    """Drop the deferrable sort indexes (marking this process as the one receiving); returns
    the names dropped, for build_indexes."""
    with write_transaction(library.db):
        present = [n for n in schema.DEFERRABLE_INDEXES if n not in schema.missing_indexes(library.db)]
        for name in present:
            library.db.execute(f"DROP INDEX {name}")
        if present:
            library.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [schema.DEFERRED_BY, str(os.getpid())]
            )
    return present


def build_indexes(library: Library, names: list[str]) -> None:
    """Build again the indexes defer_indexes dropped (and any other missing one)."""
    missing = schema.missing_indexes(library.db)
    if names or missing:
        schema.build_indexes(library.db, missing)
