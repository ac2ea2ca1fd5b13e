"""Numbered schema migrations. PRAGMA user_version says which have run.

Add a migration by appending to MIGRATIONS; never edit one that has shipped. Each runs in the
same transaction as the bump of user_version, so a killed migration leaves the old schema.

Tables marked "replicated" hold state derived only from the change log (replaying the log into
an empty library rebuilds them exactly); "local" tables describe this machine only.

Columns no longer written: changelog.cs (since 0.1: an entry's change set follows from the
headers' ranges, and updating every log row at sealing time doubled its cost).
"""

from __future__ import annotations

import os
import sqlite3

from p2psync.errors import LibraryCorrupt
from p2psync.store.db import Database, write_transaction

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    -- local: library identity, this device, clocks
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

    -- replicated: every device's append-only log of operations
    -- (a rowid table: entries are large, and rowid order is the order this library applied them,
    -- which always respects causality)
    CREATE TABLE changelog (
        num INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        op TEXT NOT NULL,
        UNIQUE (device, seq)
    );

    -- replicated: references. data = the provisional value of each field; state = the
    -- multi-value registers (the truth) packed against data (see engine/registers.pack);
    -- the other columns serve lists and sorting.
    CREATE TABLE refs (
        num INTEGER PRIMARY KEY,          -- local rowid, keys the search index only
        id TEXT NOT NULL UNIQUE,
        type TEXT,
        title TEXT,
        year TEXT,
        first_author TEXT,
        trashed INTEGER NOT NULL DEFAULT 0,
        conflict INTEGER NOT NULL DEFAULT 0,
        added INTEGER,
        modified INTEGER NOT NULL,
        data TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX refs_by_added ON refs (trashed, added, id);
    -- contentless: the text is in refs already; rows are removed with the 'delete' command
    CREATE VIRTUAL TABLE refs_fts USING fts5 (
        title, authors, abstract, keywords, notes,
        content = '', tokenize = 'unicode61 remove_diacritics 2'
    );

    -- replicated: groups and memberships (an add-wins set per group)
    CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        name TEXT,
        conflict INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX groups_by_name ON groups (name);
    CREATE TABLE memberships (
        group_id TEXT NOT NULL,
        ref_id TEXT NOT NULL,
        dots TEXT NOT NULL,
        PRIMARY KEY (group_id, ref_id)
    ) WITHOUT ROWID;
    CREATE INDEX memberships_by_ref ON memberships (ref_id);

    -- replicated: attachment manifests, one register per (reference, file name)
    CREATE TABLE attachments (
        ref_id TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER,
        sha256 TEXT,
        conflict INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        PRIMARY KEY (ref_id, name)
    ) WITHOUT ROWID;

    -- replicated: permanently deleted objects
    CREATE TABLE tombstones (kind TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (kind, id)) WITHOUT ROWID;

    -- local: the attachment files on this machine's disk, to notice edits made in place
    CREATE TABLE attachment_files (
        ref_id TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        mtime_ns INTEGER NOT NULL,
        PRIMARY KEY (ref_id, name)
    ) WITHOUT ROWID;
    """,
    # 2: library membership (device.add operations)
    """
    -- replicated: the devices that may write to this library, and who introduced each
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        name TEXT NOT NULL,
        introducer TEXT,
        signature TEXT,
        seq INTEGER NOT NULL,            -- dot of the device.add entry: (author, seq)
        author TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: permanent delete marks a reference deleted instead of erasing it (engine/merge.py)
    """
    ALTER TABLE refs ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    DROP INDEX refs_by_added;
    CREATE INDEX refs_by_added ON refs (deleted, trashed, added, id);
    """,
    # 4: signed change sets, revocation, and what went wrong in syncs
    """
    -- replicated: every change set this library has (its own, sealed, and every received one),
    -- stored exactly as signed so it can be forwarded; num = the order they were stored in,
    -- which respects their dependencies
    CREATE TABLE changesets (
        num INTEGER PRIMARY KEY,
        author TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        id TEXT NOT NULL UNIQUE,
        prev TEXT,
        wire BLOB NOT NULL,
        UNIQUE (author, first)
    );
    CREATE INDEX changesets_by_author ON changesets (author, last);
    ALTER TABLE devices ADD COLUMN revoked_upto INTEGER;

    -- local: problems met while syncing, for `p2psync status`
    CREATE TABLE sync_problems (
        num INTEGER PRIMARY KEY,
        peer TEXT NOT NULL,
        at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL
    );
    """,
    # 5: operations are stored once, in the log; a stored change set keeps only its header and
    # signature, and its wire bytes are assembled from the log when sent (engine/changesets.py)
    """
    CREATE TABLE changelog_v5 (
        num INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        op TEXT NOT NULL,                -- canonical JSON of the operation
        cs INTEGER,                      -- changesets.num once sealed or received in one
        UNIQUE (device, seq)
    );
    INSERT INTO changelog_v5 (num, device, seq, ts, op, cs)
        SELECT l.num, l.device, l.seq, l.ts, l.op,
               (SELECT c.num FROM changesets c WHERE c.author = l.device AND l.seq BETWEEN c.first AND c.last)
        FROM changelog l;
    DROP TABLE changelog;
    ALTER TABLE changelog_v5 RENAME TO changelog;
    CREATE TABLE changesets_v5 (
        num INTEGER PRIMARY KEY,
        author TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        id TEXT NOT NULL UNIQUE,
        prev TEXT,
        deps TEXT NOT NULL,              -- canonical JSON of the deps map
        sig TEXT NOT NULL,               -- base64 signature
        UNIQUE (author, first)
    );
    INSERT INTO changesets_v5 (num, author, first, last, id, prev, deps, sig)
        SELECT num, author, first, last, id, prev, json_extract(wire, '$.body.deps'), json_extract(wire, '$.sig')
        FROM changesets;
    DROP TABLE changesets;
    ALTER TABLE changesets_v5 RENAME TO changesets;
    CREATE INDEX changesets_by_author ON changesets (author, last);
    """,
    # 6: revocations kept on their own, so that one that arrives before its device is known
    # is not lost (the smallest cut-off per device wins)
    """
    CREATE TABLE revocations (device TEXT PRIMARY KEY, upto INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO revocations (device, upto) SELECT id, revoked_upto FROM devices WHERE revoked_upto IS NOT NULL;
    """,
    # 7: references received in bulk are indexed for search afterwards, not inside the sync
    """
    -- local: references whose search-index row has not been written yet; the index catches up
    -- (apply.index_backlog) before any search and after a sync
    -- (num is refs.num: the backlog is indexed in that order, so the index is appended to)
    CREATE TABLE search_backlog (num INTEGER PRIMARY KEY);
    """,
    # 8: what this machine knows about syncing with each peer, for `status` and for reaching
    # paired peers again without mDNS
    """
    -- local: one row per peer device this machine has talked to (or tried to)
    CREATE TABLE peer_status (
        device TEXT PRIMARY KEY,
        address TEXT,                    -- host:port it was last reached at
        last_seen INTEGER,               -- ms: last time it answered (or was announced)
        last_sync INTEGER,               -- ms: last sync that completed
        received INTEGER NOT NULL DEFAULT 0,   -- change sets the last sync brought in
        sent INTEGER NOT NULL DEFAULT 0,       -- change sets it took from us
        last_error TEXT,                 -- in words, cleared by a sync that completes
        last_error_at INTEGER
    ) WITHOUT ROWID;
    """,
    # 9: joining another library by pairing sets this library's content aside until the other
    # library has arrived, then writes it back into it (store/rebase.py)
    """
    -- local: content waiting to be merged into the library this device joined
    -- (kind: 'ref', 'group' or 'attachment'; body: canonical JSON)
    CREATE TABLE merge_stash (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id))
        WITHOUT ROWID;
    """,
    # 10: attachment sync (store/transfers.py): where each chunk of the files on this disk is,
    # the versions of a conflicted attachment kept beside the one shown, and why a file is missing
    """
    -- local: the chunks of every attachment file on this disk, by the file's SHA-256
    CREATE TABLE chunk_index (
        chunk TEXT NOT NULL,             -- the chunk's SHA-256
        file TEXT NOT NULL,              -- the SHA-256 of a whole file that holds it
        offset INTEGER NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (chunk, file, offset)
    ) WITHOUT ROWID;
    CREATE INDEX chunk_index_file ON chunk_index (file);
    CREATE INDEX attachment_files_sha ON attachment_files (sha256);

    -- local: versions of a conflicted attachment kept until the conflict is resolved
    -- (attachments/.p2psync/versions/REF/SHA256; attachments/REF/.p2psync-versions/ before files_layout 2)
    CREATE TABLE attachment_versions (
        ref_id TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        PRIMARY KEY (ref_id, name, sha256)
    ) WITHOUT ROWID;
    CREATE INDEX attachment_versions_sha ON attachment_versions (sha256);

    -- local: attachments that a sync could not bring, and why (for status)
    CREATE TABLE attachment_missing (
        ref_id TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        reason TEXT NOT NULL,            -- no_peer | unreachable | verification | manifest | no_chunks
        detail TEXT NOT NULL,            -- in words
        at INTEGER NOT NULL,
        PRIMARY KEY (ref_id, name, sha256)
    ) WITHOUT ROWID;
    """,
    # 11: a received ref.put that created a reference keeps its fields once, in refs.data
    # (store/logtext.py): the log row holds op = '' and the reference's id
    """
    -- replicated, stored locally: the reference whose data holds this entry's fields (op is '')
    ALTER TABLE changelog ADD COLUMN ref TEXT;
    -- local: the log row whose fields this reference's data still is; cleared (the entry written
    -- back into the log) before the reference changes
    ALTER TABLE refs ADD COLUMN origin INTEGER;
    -- the log must never lose an entry's text: a row holding one changes only after
    -- logtext.restore has put it back (deleting the log row first, as a rebase does, is fine)
    CREATE TRIGGER refs_hold_log_text_update BEFORE UPDATE OF data ON refs
    WHEN old.origin IS NOT NULL AND EXISTS (SELECT 1 FROM changelog WHERE num = old.origin AND op = '')
    BEGIN SELECT RAISE(ABORT, 'a reference holding a log entry changed before the entry was restored'); END;
    CREATE TRIGGER refs_hold_log_text_delete BEFORE DELETE ON refs
    WHEN old.origin IS NOT NULL AND EXISTS (SELECT 1 FROM changelog WHERE num = old.origin AND op = '')
    BEGIN SELECT RAISE(ABORT, 'a reference holding a log entry changed before the entry was restored'); END;
    """,
    # 12: a device renames itself (device.name): its latest name, kept apart from its introduction
    # so that a rename that arrives first is not lost
    """
    -- replicated: each device's own latest name (the largest seq of its device.name entries)
    CREATE TABLE device_names (device TEXT PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;
    """,
    # 13: the library list of the web app (store/library/listing.py): each sort order
    # an index, the conflicted references found without reading every row, and the references
    # that share a duplicate key (store/library/duplicates.py)
    """
    -- sort orders: an empty value sorts as '' (first ascending), so that a page's place in the
    -- list is a (value, id) pair that compares with no NULL in it
    CREATE INDEX refs_by_added_sort ON refs (deleted, trashed, coalesce(added, 0), id);
    CREATE INDEX refs_by_title ON refs (deleted, trashed, coalesce(title, '') COLLATE NOCASE, id);
    CREATE INDEX refs_by_author ON refs (deleted, trashed, coalesce(first_author, '') COLLATE NOCASE, id);
    CREATE INDEX refs_by_year ON refs (deleted, trashed, coalesce(year, ''), id);
    CREATE INDEX refs_by_journal ON refs
        (deleted, trashed, coalesce(json_extract(data, '$.journal'), '') COLLATE NOCASE, id);
    CREATE INDEX refs_in_conflict ON refs (id) WHERE conflict = 1;
    CREATE INDEX attachments_in_conflict ON attachments (ref_id) WHERE conflict = 1;

    -- local: the duplicate keys (model/duplicates.py) of every reference in the library (not
    -- trashed, not deleted), the references that share one with another, and the references
    -- whose keys must be worked out again (filled by the triggers below, emptied by
    -- duplicates.catch_up before the duplicates are read)
    CREATE TABLE duplicate_keys (key TEXT NOT NULL, num INTEGER NOT NULL, PRIMARY KEY (key, num)) WITHOUT ROWID;
    CREATE INDEX duplicate_keys_by_num ON duplicate_keys (num);
    CREATE TABLE duplicate_refs (num INTEGER PRIMARY KEY);
    CREATE TABLE duplicate_backlog (num INTEGER PRIMARY KEY);
    INSERT INTO duplicate_backlog (num) SELECT num FROM refs WHERE deleted = 0;
    CREATE TRIGGER refs_duplicates_insert AFTER INSERT ON refs
    BEGIN INSERT OR IGNORE INTO duplicate_backlog (num) VALUES (new.num); END;
    CREATE TRIGGER refs_duplicates_update AFTER UPDATE OF data ON refs WHEN old.data IS NOT new.data
    BEGIN INSERT OR IGNORE INTO duplicate_backlog (num) VALUES (new.num); END;
    CREATE TRIGGER refs_duplicates_delete AFTER DELETE ON refs
    BEGIN INSERT OR IGNORE INTO duplicate_backlog (num) VALUES (old.num); END;
    """,
    # 14: smart groups (a group's query register), group sets, and the library's name, all
    # replicated (engine/ops.py: group.put's query and set, groupset.put/delete, library.name)
    """
    -- replicated: a smart group's search (NULL: a plain group) and the set a group is filed in
    -- (NULL, or a set that is deleted or has not arrived: unfiled)
    ALTER TABLE groups ADD COLUMN query TEXT;
    ALTER TABLE groups ADD COLUMN set_id TEXT;
    CREATE INDEX groups_by_set ON groups (set_id) WHERE set_id IS NOT NULL;
    -- replicated: group sets (a named folder of groups); name NULL while its register is empty
    CREATE TABLE group_sets (
        id TEXT PRIMARY KEY,
        name TEXT,
        conflict INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL
    ) WITHOUT ROWID;
    -- replicated: the library's name register, one row once a device has renamed the library
    -- (until then the name given at init, in meta, is shown)
    CREATE TABLE library_name (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, state TEXT NOT NULL);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
# Columns of replicated tables that describe this machine only: refs.num keys the search index;
# refs.origin says where a log entry's text is kept (store/logtext.py).
LOCAL_COLUMNS = ("num", "origin")
REPLICATED_TABLES = (
    "changelog",
    "refs",
    "groups",
    "memberships",
    "attachments",
    "tombstones",
    "devices",
    "revocations",
    "device_names",
    "group_sets",
    "library_name",
)


# The sort indexes of the library list (migration 13) whose rows arrive in random order: a
# receive of far more references than the library holds drops them and builds them again at its
# end (store/bulk.py), since inserting a million rows into each, in random places, rewrites most
# of their pages at every commit. The statements are migration 13's (a test holds them equal).
DEFERRABLE_INDEXES = {
    "refs_by_title": "CREATE INDEX refs_by_title ON refs (deleted, trashed, coalesce(title, '') COLLATE NOCASE, id)",
    "refs_by_author": (
        "CREATE INDEX refs_by_author ON refs (deleted, trashed, coalesce(first_author, '') COLLATE NOCASE, id)"
    ),
    "refs_by_year": "CREATE INDEX refs_by_year ON refs (deleted, trashed, coalesce(year, ''), id)",
    "refs_by_journal": (
        "CREATE INDEX refs_by_journal ON refs "
        "(deleted, trashed, coalesce(json_extract(data, '$.journal'), '') COLLATE NOCASE, id)"
    ),
}
DEFERRED_BY = "sort_indexes_deferred_by"  # meta key: the process receiving without them (its pid)


def missing_indexes(db: Database) -> list[str]:
    """The deferrable indexes not in the library now (one look at the schema table)."""
    names = list(DEFERRABLE_INDEXES)
    marks = ",".join("?" * len(names))
    sql = f"SELECT name FROM sqlite_schema WHERE type = 'index' AND name IN ({marks})"
    present = {n for (n,) in db.execute(sql, names)}
    return [name for name in names if name not in present]


def build_indexes(db: Database, names: list[str]) -> None:
    """Build these deferrable indexes again, in one transaction, and clear the mark."""
    with write_transaction(db):
        for name in names:
            db.execute(DEFERRABLE_INDEXES[name].replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
        db.execute("DELETE FROM meta WHERE key = ?", [DEFERRED_BY])


def _restore_indexes(db: Database) -> None:
    """A process that dropped the sort indexes for a bulk receive and was killed before building
    them again left them out: build them now, unless that process is still receiving."""
    missing = missing_indexes(db)
    if not missing:
        return
    row = db.execute("SELECT value FROM meta WHERE key = ?", [DEFERRED_BY]).fetchone()
    if row is not None and _alive(int(row[0])):
        return
    build_indexes(db, missing)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # no signal: only whether it exists
    except ProcessLookupError:
        return False
    except OSError:  # exists, under another user
        return True
    return True


def migrate(db: Database) -> int:
    """Bring the schema up to date; return the version it is now at."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LibraryCorrupt(
            f"This library was written by a newer p2psync (schema {version}); upgrade p2psync to open it."
        )
    while version < SCHEMA_VERSION:
        with write_transaction(db):
            # Re-read inside the lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                break
            for statement in _statements(MIGRATIONS[version]):
                db.execute(statement)
            version += 1
            db.execute(f"PRAGMA user_version = {version}")
    _restore_indexes(db)
    return version


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction); a
    trigger's body holds semicolons of its own, so pieces join until SQLite calls them complete."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    pending = ""
    for piece in "\n".join(lines).split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip())
    return statements
