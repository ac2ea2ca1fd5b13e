"""Where the PostgreSQL backend keeps blobs (change sets' and chunks' ciphertext): behind
`BlobStore`, so that an object store could take them later without touching the rules.

A blob is named like SqliteStorage's files, `EPOCH/HH/SHA256` under its account (EPOCH: the
account's blob epoch, moved on by every purge; SHA256: of the blob), so that `relay migrate`
copies names unchanged and an object store's key would be `ACCOUNT/EPOCH/HH/SHA256`.

`PgBlobs` keeps them in the table `blobs` of the same database, written and deleted inside the
caller's transaction: a blob is there exactly when the rows naming it committed. An object store
(S3 and the like) cannot join a database transaction; implementing this Protocol with one would take:
`put` uploading before the rows commit (content-named, so a rolled-back push leaves at most an
orphan object, never a row without its blob), `drop`/`drop_account` recording the names in a
table in the same transaction and deleting the objects after the commit (again at start after
a crash, as SqliteStorage's `doomed` does), and a sweep for orphans older than an hour. Reads
would then come from the store, not the transaction's snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol


def blob_name(epoch: int, data: bytes) -> str:
    """The name of a blob under its account: EPOCH/HH/SHA256."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{epoch}/{digest[:2]}/{digest}"


class BlobStore(Protocol):
    """Blobs by account and name; `tx` is the caller's open transaction (a psycopg cursor)."""

    def put(self, tx: Any, account: str, epoch: int, blobs: Sequence[bytes]) -> list[str]:
        """Store each blob (once per name) and return their names, in order."""
        ...

    def get(self, tx: Any, account: str, names: Sequence[str]) -> dict[str, bytes]:
        """The blobs found of these names (a name missing from the answer: gone)."""
        ...

    def drop(self, tx: Any, account: str, names: Sequence[str]) -> None:
        """Delete these blobs, unless a change set or chunk of the account still names them."""
        ...

    def drop_account(self, tx: Any, account: str) -> None:
        """Delete every blob of the account (a purge)."""
        ...


class PgBlobs:
    """Blobs as bytea rows of the table `blobs` (storage_pg_migrations.py), in the caller's transaction."""

    def put(self, tx: Any, account: str, epoch: int, blobs: Sequence[bytes]) -> list[str]:
        names = [blob_name(epoch, data) for data in blobs]
        tx.executemany(
            "INSERT INTO blobs (account, name, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [(account, name, data) for name, data in zip(names, blobs, strict=True)],
        )
        return names

    def get(self, tx: Any, account: str, names: Sequence[str]) -> dict[str, bytes]:
        if not names:
            return {}
        rows = tx.execute(
            "SELECT name, data FROM blobs WHERE account = %s AND name = ANY(%s)", [account, list(names)]
        ).fetchall()
        return {name: bytes(data) for name, data in rows}

    def drop(self, tx: Any, account: str, names: Sequence[str]) -> None:
        if names:
            tx.execute(
                "DELETE FROM blobs b WHERE b.account = %s AND b.name = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM changesets c WHERE c.account = b.account AND c.blob = b.name) "
                "AND NOT EXISTS (SELECT 1 FROM chunks k WHERE k.account = b.account AND k.blob = b.name)",
                [account, list(names)],
            )

    def drop_account(self, tx: Any, account: str) -> None:
        tx.execute("DELETE FROM blobs WHERE account = %s", [account])
