"""Helpers shared by the store tests (no fixtures with side effects here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2psync.store.library import Library
from p2psync.store.schema import REPLICATED_TABLES


def snapshot(library: Library) -> dict[str, Any]:
    """Every replicated table as sorted rows, plus what the search index holds per reference.

    refs.num is a local rowid (it only keys the search index), so it is left out.
    """
    db = library.db
    out: dict[str, Any] = {}
    for table in REPLICATED_TABLES:
        columns = [d[0] for d in db.execute(f"SELECT * FROM {table} LIMIT 0").description]
        keep = [c for c in columns if c != "num"]
        rows = db.execute(f"SELECT {', '.join(keep)} FROM {table}").fetchall()
        out[table] = sorted(rows)
    out["refs_fts"] = sorted(
        db.execute(
            "SELECT r.id, f.title, f.authors, f.abstract, f.keywords, f.notes "
            "FROM refs_fts f JOIN refs r ON r.num = f.rowid"
        ).fetchall()
    )
    out["fts_rows"] = db.execute("SELECT count(*) FROM refs_fts").fetchone()[0]
    return out


def replay(library: Library, target: Path) -> Library:
    """Replay a library's whole change log into a new, empty library at target."""
    replica = Library.create(target, "replica")
    replica.ingest(library.log_entries())
    return replica
