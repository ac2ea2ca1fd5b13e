"""Helpers shared by the store tests (no fixtures with side effects here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from p2psync.store.library import Library
from p2psync.store.schema import LOCAL_COLUMNS, REPLICATED_TABLES


def snapshot(library: Library) -> dict[str, Any]:
    """Every replicated table as sorted rows, plus what the search index holds per reference.

    refs.num is a local rowid (it only keys the search index), so it is left out, as is refs.origin
    (where this machine keeps a log entry's text). References a
    sync left for later indexing are indexed first: the caught-up index must equal one kept up
    to date write by write.
    """
    for _ in library.catch_up_search():
        pass
    db = library.db
    out: dict[str, Any] = {}
    # The log as entries (an operation may sit in the log row or in its stored change set).
    out["changelog"] = sorted((d, s, t, json.dumps(op, sort_keys=True)) for d, s, t, op in library.log_entries())
    for table in REPLICATED_TABLES:
        if table == "changelog":
            continue
        columns = [d[0] for d in db.execute(f"SELECT * FROM {table} LIMIT 0").description]
        keep = [c for c in columns if c not in LOCAL_COLUMNS]
        rows = db.execute(f"SELECT {', '.join(keep)} FROM {table}").fetchall()
        out[table] = sorted(rows)
    # The search index is contentless; fts5vocab lists every (term, document, column, offset).
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms USING fts5vocab(main, refs_fts, instance)")
    out["refs_fts"] = sorted(
        db.execute("SELECT v.term, r.id, v.col, v.offset FROM temp.fts_terms v JOIN refs r ON r.num = v.doc").fetchall()
    )
    out["fts_docs"] = db.execute("SELECT count(DISTINCT doc) FROM temp.fts_terms").fetchone()[0]
    return out


def replay(library: Library, target: Path) -> Library:
    """Replay a library's whole change log into a new, empty library at target."""
    replica = Library.create(target, "replica", found=False)
    replica.ingest(library.log_entries())
    return replica


def process_alive(pid: int) -> bool:
    """Whether pid runs (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


P2PSYNC = [sys.executable, "-m", "p2psync"]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`p2psync ARGS` as a process, with only the library its arguments name (never the test
    runner's P2PSYNC_LIBRARY), `env` added to the environment."""
    base = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    return subprocess.run(
        [*P2PSYNC, *args], capture_output=True, text=True, timeout=120, env={**base, **(env or {})}, input=stdin
    )
