"""Numbered migrations of the relay's SQLite data (storage.py), so that a relay keeps the data an
older version stored.

`meta.schema` holds the number of the last migration applied; schema 1 is storage._SCHEMA as the
first release made it. `upgrade` applies each later migration in its own transaction, in order,
and records its number in the same transaction: a crash leaves the data at one number or the
next, never between. Data of a newer version than this code is refused, never guessed at.
A migration only adds (tables, columns with defaults, indexes); PostgreSQL deployments apply the
same statements.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2psync.errors import P2PSyncError

# 2: devices and keys (protocol/relay.md §5). Tokens are tied to a device (NULL: a login made
# before, which may only tie itself to a device, relay.md §3); devices prove their key and give
# their agreement key; revocations; key epochs and the copies of each epoch's key; every stored
# blob says which epoch's key it needs (0: the key the account was bound with).
_DEVICES_AND_KEYS = (
    "ALTER TABLE tokens ADD COLUMN device TEXT",
    "ALTER TABLE accounts ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE accounts ADD COLUMN wrapped_epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE changesets ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE chunks ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS changesets_device ON changesets(account, device, first)",
    """CREATE TABLE IF NOT EXISTS devices (
        account TEXT NOT NULL,
        device TEXT NOT NULL,
        public_key BLOB NOT NULL,
        agreement_key BLOB NOT NULL,
        proof_time INTEGER NOT NULL,
        proof_signature BLOB NOT NULL,
        registered REAL NOT NULL,
        PRIMARY KEY (account, device)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS revocations (
        account TEXT NOT NULL,
        device TEXT NOT NULL,
        by_device TEXT NOT NULL,
        upto INTEGER NOT NULL,
        signature BLOB NOT NULL,
        at REAL NOT NULL,
        covered INTEGER NOT NULL DEFAULT 0,  -- 1 once a key epoch the device never held is in force
        PRIMARY KEY (account, device)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS key_epochs (
        account TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        by_device TEXT NOT NULL,
        key_check BLOB NOT NULL,
        previous BLOB NOT NULL,
        signature BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account, epoch)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS key_wraps (
        account TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        device TEXT NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (account, epoch, device)
    ) WITHOUT ROWID""",
)

# 3: the recovery key (storage_recovery.py): a verifier of it and the library key wrapped with it.
_RECOVERY = (
    "ALTER TABLE accounts ADD COLUMN recovery_salt BLOB",
    "ALTER TABLE accounts ADD COLUMN recovery_verifier BLOB",
    "ALTER TABLE accounts ADD COLUMN recovery_kdf TEXT",
    "ALTER TABLE accounts ADD COLUMN recovery_wrapped BLOB",
    "ALTER TABLE accounts ADD COLUMN recovery_epoch INTEGER",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {2: _DEVICES_AND_KEYS, 3: _RECOVERY}
LATEST = max(MIGRATIONS)


def upgrade(db: sqlite3.Connection, data_dir: Path) -> int:
    """Bring the data to LATEST; returns the number it was at. The 'schema' row must exist."""
    (text,) = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    start = int(text) if text.isdigit() else -1
    if not 1 <= start <= LATEST:
        raise P2PSyncError(
            f"The relay data in {data_dir} has schema {text}; this p2psync reads schemas 1 to {LATEST}. "
            "Run the newer p2psync that wrote it."
        )
    for number in range(start + 1, LATEST + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number]:
                db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", [str(number)])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return start
