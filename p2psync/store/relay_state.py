"""What the library records of its link to a relay account: the SQL behind relay/.

The link is a set of relay_* rows in the local `meta` table (never replicated; relay/state.py
says what each holds and parses them), one relay_pushed:SHA256 row per attachment file whose
chunks are all on the relay, and the relay's rows in `sync_problems` (peer "relay"). The relay
client reads and writes them only through these functions, so every statement on the library's
database lives in store/. Writers that take no transaction run inside the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from p2psync.engine import clock
from p2psync.store.db import write_transaction
from p2psync.store.library import Library

PEER = "relay"  # how the relay is named in sync_problems
PUSHED_PREFIX = "relay_pushed:"
_PUSHED_END = PUSHED_PREFIX[:-1] + ";"  # the first key after every relay_pushed:* key

Rows = Mapping[str, str | int | None]


# --- meta rows -----------------------------------------------------------------------------------


def read_rows(library: Library, names: Iterable[str]) -> dict[str, str]:
    """The meta rows among `names` that are set."""
    names = tuple(names)
    marks = ",".join("?" * len(names))
    return dict(library.db.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", names).fetchall())


def read_row(library: Library, name: str) -> str | None:
    row = library.db.execute("SELECT value FROM meta WHERE key = ?", [name]).fetchone()
    return str(row[0]) if row else None


def write_rows_in(library: Library, values: Rows) -> None:
    """Set (or, with None, delete) meta rows, inside the caller's transaction."""
    for name, value in values.items():
        if value is None:
            library.db.execute("DELETE FROM meta WHERE key = ?", [name])
        else:
            library.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [name, str(value)])


def write_rows(library: Library, values: Rows) -> None:
    """Set (or, with None, delete) meta rows, in one transaction."""
    with write_transaction(library.db):
        write_rows_in(library, values)


def as_count(text: str | None) -> int:
    """A counter row read back: 0 when absent or not a number."""
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def advance_cursor(library: Library, cursor: int) -> None:
    """Move relay_cursor forward only (another process may have pulled further meanwhile)."""
    with write_transaction(library.db):
        if cursor > as_count(read_row(library, "relay_cursor")):
            write_rows_in(library, {"relay_cursor": cursor})


def note_chunk_count(library: Library, chunks: int) -> None:
    """Record how many chunks the account holds; fewer than at the last sync means a purge, so
    every file is checked with the relay again."""
    with write_transaction(library.db):
        if chunks < as_count(read_row(library, "relay_chunks")):
            forget_pushed(library)
        write_rows_in(library, {"relay_chunks": chunks})


def forget_link(library: Library) -> None:
    """Delete every relay_* row and the relay's recorded problems; nothing else."""
    with write_transaction(library.db):
        library.db.execute("DELETE FROM meta WHERE key >= 'relay_' AND key < 'relay`'")
        library.db.execute("DELETE FROM sync_problems WHERE peer = ?", [PEER])


# --- attachment files whose chunks are on the relay ----------------------------------------------


def forget_pushed(library: Library) -> None:
    """Forget which files are on the relay (inside the caller's transaction)."""
    library.db.execute("DELETE FROM meta WHERE key >= ? AND key < ?", [PUSHED_PREFIX, _PUSHED_END])


def mark_pushed(library: Library, file_sha: str) -> None:
    write_rows(library, {PUSHED_PREFIX + file_sha: 1})


def files_to_push(library: Library) -> list[str]:
    """SHA-256 of every attachment file (and kept version) on this disk that has a chunk index and
    is not yet known to be on the relay."""
    rows = library.db.execute(
        "SELECT DISTINCT sha256 FROM (SELECT sha256 FROM attachment_files UNION SELECT sha256 FROM "
        "attachment_versions) WHERE sha256 IN (SELECT file FROM chunk_index)"
    ).fetchall()
    pushed = {
        k[len(PUSHED_PREFIX) :]
        for (k,) in library.db.execute("SELECT key FROM meta WHERE key >= ? AND key < ?", [PUSHED_PREFIX, _PUSHED_END])
    }
    return [sha for (sha,) in rows if sha not in pushed]


def file_chunks(library: Library, file_sha: str) -> list[tuple[str, int, int]]:
    """(chunk, first offset, size) of each distinct chunk of a file, in file order."""
    return [
        (str(c), int(o), int(s))
        for c, o, s in library.db.execute(
            "SELECT chunk, min(offset), size FROM chunk_index WHERE file = ? GROUP BY chunk ORDER BY min(offset)",
            [file_sha],
        )
    ]


# --- the relay's problems ------------------------------------------------------------------------


def record_problem(library: Library, reason: str, message: str) -> None:
    with write_transaction(library.db):
        library.db.execute(
            "INSERT INTO sync_problems (peer, at, reason, message) VALUES (?, ?, ?, ?)",
            [PEER, clock.now_ms(), reason, message],
        )


def record_problem_once(library: Library, reason: str, message: str) -> None:
    """A problem recorded once, not at every sync that finds it again."""
    if not library.db.execute(
        "SELECT 1 FROM sync_problems WHERE peer = ? AND reason = ? AND message = ?", [PEER, reason, message]
    ).fetchone():
        record_problem(library, reason, message)


# --- members and removals, as the key epochs need them --------------------------------------------


def is_member(library: Library, device_id: str) -> bool:
    return library.db.execute("SELECT 1 FROM devices WHERE id = ?", [device_id]).fetchone() is not None


def is_removed(library: Library, device_id: str) -> bool:
    return library.db.execute("SELECT 1 FROM revocations WHERE device = ?", [device_id]).fetchone() is not None


def revocations(library: Library) -> dict[str, int]:
    """Device -> upto of every signed device.revoke this library holds."""
    return {str(d): int(u) for d, u in library.db.execute("SELECT device, upto FROM revocations")}


def member_keys(library: Library) -> dict[str, str]:
    """Device -> public key (base64) of every device in the library's devices table."""
    return {str(d): str(k) for d, k in library.db.execute("SELECT id, public_key FROM devices")}
