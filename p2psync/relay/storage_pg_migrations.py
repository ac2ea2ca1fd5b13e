"""Numbered migrations of the relay's PostgreSQL data (storage_pg.py), run at every start.

Numbers mean what they mean for SQLite (storage_migrations.py): schema N holds the same data
model on both, which `relay migrate` checks. The PostgreSQL backend came with SQLite's schema 2,
so its first migration is number 2 and makes every table at once; a later change adds the same
number to both modules.

`upgrade` runs in ONE transaction that first takes `pg_advisory_xact_lock(LOCK)`: two relay
processes starting together on an empty database wait for each other, and the second finds the
work done. DDL in PostgreSQL is transactional, so a crash leaves the schema at its old number.
Data of a newer version than this code is refused, never guessed at.
"""

from __future__ import annotations

from typing import Any

from p2psync.errors import P2PSyncError

LOCK = 0x7032_7073_796E_63  # "p2psync": the advisory lock held while migrating

_TABLES = (
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        salt BYTEA NOT NULL,
        login_hash BYTEA NOT NULL,
        library_id TEXT,
        wrapped_key BYTEA,
        used_bytes BIGINT NOT NULL DEFAULT 0,
        next_num BIGINT NOT NULL DEFAULT 1,  -- never reset, not even by purge: a num is never reused
        epoch BIGINT NOT NULL DEFAULT 0,  -- the blob epoch in use (blobs.py names); a purge moves it on
        created DOUBLE PRECISION NOT NULL,
        kdf TEXT,
        key_epoch BIGINT NOT NULL DEFAULT 0,
        wrapped_epoch BIGINT NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE tokens (
        hash BYTEA PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(id),
        expires DOUBLE PRECISION NOT NULL,
        device TEXT
    )""",
    "CREATE INDEX tokens_account ON tokens(account)",
    "CREATE INDEX tokens_expires ON tokens(expires)",
    """CREATE TABLE login_attempts (
        id BIGSERIAL PRIMARY KEY,
        email TEXT NOT NULL,
        client TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX attempts_email ON login_attempts(email, at)",
    "CREATE INDEX attempts_client ON login_attempts(client, at)",
    "CREATE INDEX attempts_at ON login_attempts(at)",
    """CREATE TABLE signup_attempts (
        id BIGSERIAL PRIMARY KEY,
        client TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX signups_client ON signup_attempts(client, at)",
    """CREATE TABLE heads (
        account TEXT NOT NULL,
        device TEXT NOT NULL,
        last BIGINT NOT NULL,
        PRIMARY KEY (account, device)
    )""",
    """CREATE TABLE changesets (
        account TEXT NOT NULL,
        num BIGINT NOT NULL,
        device TEXT NOT NULL,
        first BIGINT NOT NULL,
        last BIGINT NOT NULL,
        size BIGINT NOT NULL,
        blob TEXT NOT NULL,  -- the blob's name (blobs.py)
        key_epoch BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (account, num)
    )""",
    "CREATE INDEX changesets_device ON changesets(account, device, first)",
    """CREATE TABLE chunks (
        account TEXT NOT NULL,
        id TEXT NOT NULL,
        size BIGINT NOT NULL,
        blob TEXT NOT NULL,
        key_epoch BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (account, id)
    )""",
    """CREATE TABLE blobs (
        account TEXT NOT NULL,
        name TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (account, name)
    )""",
    # Ciphertext does not compress: store it out of line without trying to.
    "ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL",
    """CREATE TABLE devices (
        account TEXT NOT NULL,
        device TEXT NOT NULL,
        public_key BYTEA NOT NULL,
        agreement_key BYTEA NOT NULL,
        proof_time BIGINT NOT NULL,
        proof_signature BYTEA NOT NULL,
        registered DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (account, device)
    )""",
    """CREATE TABLE revocations (
        account TEXT NOT NULL,
        device TEXT NOT NULL,
        by_device TEXT NOT NULL,
        upto BIGINT NOT NULL,
        signature BYTEA NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        covered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account, device)
    )""",
    """CREATE TABLE key_epochs (
        account TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        by_device TEXT NOT NULL,
        key_check BYTEA NOT NULL,
        previous BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (account, epoch)
    )""",
    """CREATE TABLE key_wraps (
        account TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        device TEXT NOT NULL,
        sealed BYTEA NOT NULL,
        PRIMARY KEY (account, epoch, device)
    )""",
)

# 3: the recovery key, as SQLite's schema 3 (storage_recovery.py).
_RECOVERY = (
    """ALTER TABLE accounts ADD COLUMN recovery_salt BYTEA, ADD COLUMN recovery_verifier BYTEA,
        ADD COLUMN recovery_kdf TEXT, ADD COLUMN recovery_wrapped BYTEA, ADD COLUMN recovery_epoch BIGINT""",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {2: _TABLES, 3: _RECOVERY}
FIRST = min(MIGRATIONS)
LATEST = max(MIGRATIONS)


def upgrade(conn: Any, where: str) -> int:
    """Bring the database to LATEST under the advisory lock; returns the number it was at (0: empty).
    `conn` is a psycopg connection in autocommit mode; `where` names the database in messages."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        text = row[0] if row else "0"
        start = int(text) if text.isdigit() else -1
        if not (start == 0 or FIRST <= start <= LATEST):
            raise P2PSyncError(
                f"The relay data in {where} has schema {text}; this p2psync reads schemas {FIRST} to {LATEST}. "
                "Run the newer p2psync that wrote it."
            )
        for number in range(max(start + 1, FIRST), LATEST + 1):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(LATEST)],
        )
    return start
