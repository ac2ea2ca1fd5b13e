"""What the relay keeps of an account's recovery key (protocol/relay.md §3.1), as part of
SqliteStorage; storage_pg_recovery.py is the same on PostgreSQL.

Five columns of `accounts` (schema 3): recovery_salt and recovery_verifier (the scrypt hash of the
login key derived from the recovery key, as for a password), recovery_kdf (how that key was
derived), recovery_wrapped (the library key wrapped with the recovery key's wrap key) and
recovery_epoch (the epoch of that key). The relay never sees the recovery key itself: the
verifier lets a device prove it knows it, the wrapped key opens only with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from threading import RLock
from typing import TYPE_CHECKING, Protocol

COLUMNS = ("recovery_salt", "recovery_verifier", "recovery_kdf", "recovery_wrapped", "recovery_epoch")
FORGET = ", ".join(f"{c} = NULL" for c in COLUMNS)  # a purge unbinds the library, and so its recovery


@dataclass(frozen=True)
class RecoveryRecord:
    """An account as a recovery sees it (the recovery fields None when it has no recovery key)."""

    account: str
    library_id: str | None
    key_epoch: int
    salt: bytes | None
    verifier: bytes | None
    kdf: str | None
    wrapped_key: bytes | None
    epoch: int | None


class RecoveryStore(Protocol):
    def set_recovery(
        self, account: str, library_id: str, salt: bytes, verifier: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        """Replace the account's recovery key; False (nothing changed) unless it holds library_id."""
        ...

    def recovery_record(self, email: str) -> RecoveryRecord | None: ...

    def recovery_epoch(self, account: str) -> int | None:
        """The epoch of the key the recovery key opens; None: no recovery key."""
        ...

    def recover_password(
        self, account: str, library_id: str, salt: bytes, login_hash: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        """A new password set with the recovery key: login hash, kdf and wrapped key replaced, every
        token revoked; False (nothing changed) unless the account still holds library_id."""
        ...


class RecoveryStorage:
    """RecoveryStore on SqliteStorage's connection (mixed into it)."""

    db: sqlite3.Connection
    _lock: RLock

    if TYPE_CHECKING:

        def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

    def set_recovery(
        self, account: str, library_id: str, salt: bytes, verifier: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        with self._lock, self._tx() as db:
            changed = db.execute(
                "UPDATE accounts SET recovery_salt = ?, recovery_verifier = ?, recovery_kdf = ?, recovery_wrapped = ?, "
                "recovery_epoch = ? WHERE id = ? AND library_id = ?",
                [salt, verifier, kdf, wrapped, epoch, account, library_id],
            )
            return changed.rowcount == 1

    def recovery_record(self, email: str) -> RecoveryRecord | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT id, library_id, key_epoch, {', '.join(COLUMNS)} FROM accounts WHERE email = ?", [email]
            ).fetchone()
        return RecoveryRecord(*row) if row else None

    def recovery_epoch(self, account: str) -> int | None:
        with self._lock:
            row = self.db.execute("SELECT recovery_epoch FROM accounts WHERE id = ?", [account]).fetchone()
        return row[0] if row else None

    def recover_password(
        self, account: str, library_id: str, salt: bytes, login_hash: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        with self._lock, self._tx() as db:
            changed = db.execute(
                "UPDATE accounts SET salt = ?, login_hash = ?, kdf = ?, wrapped_key = ?, wrapped_epoch = ? "
                "WHERE id = ? AND library_id = ?",
                [salt, login_hash, kdf, wrapped, epoch, account, library_id],
            )
            if changed.rowcount != 1:
                return False
            db.execute("DELETE FROM tokens WHERE account = ?", [account])
            return True
