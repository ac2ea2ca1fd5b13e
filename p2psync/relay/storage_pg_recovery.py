"""The recovery key's columns on PostgreSQL (storage_recovery.py says what they hold), mixed into
PostgresStorage: each call one transaction; the writes lock the account's row first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from p2psync.relay.storage_recovery import COLUMNS, RecoveryRecord

T = TypeVar("T")


class PgRecovery:
    if TYPE_CHECKING:

        def _run(self, work: Callable[[Any], T], snapshot: bool = False) -> T: ...

        @staticmethod
        def _lock_account(cur: Any, account: str, columns: str) -> tuple[Any, ...]: ...

    def set_recovery(
        self, account: str, library_id: str, salt: bytes, verifier: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        def work(cur: Any) -> bool:
            (bound,) = self._lock_account(cur, account, "library_id")
            if bound != library_id:
                return False
            cur.execute(
                "UPDATE accounts SET recovery_salt = %s, recovery_verifier = %s, recovery_kdf = %s, "
                "recovery_wrapped = %s, recovery_epoch = %s WHERE id = %s",
                [salt, verifier, kdf, wrapped, epoch, account],
            )
            return True

        return self._run(work)

    def recovery_record(self, email: str) -> RecoveryRecord | None:
        row = self._run(
            lambda cur: cur.execute(
                f"SELECT id, library_id, key_epoch, {', '.join(COLUMNS)} FROM accounts WHERE email = %s", [email]
            ).fetchone()
        )
        if row is None:
            return None
        values: list[Any] = [bytes(v) if isinstance(v, memoryview) else v for v in row]
        return RecoveryRecord(*values)

    def recovery_epoch(self, account: str) -> int | None:
        row = self._run(
            lambda cur: cur.execute("SELECT recovery_epoch FROM accounts WHERE id = %s", [account]).fetchone()
        )
        return int(row[0]) if row and row[0] is not None else None

    def recover_password(
        self, account: str, library_id: str, salt: bytes, login_hash: bytes, kdf: str, wrapped: bytes, epoch: int
    ) -> bool:
        def work(cur: Any) -> bool:
            (bound,) = self._lock_account(cur, account, "library_id")
            if bound != library_id:
                return False
            cur.execute(
                "UPDATE accounts SET salt = %s, login_hash = %s, kdf = %s, wrapped_key = %s, wrapped_epoch = %s "
                "WHERE id = %s",
                [salt, login_hash, kdf, wrapped, epoch, account],
            )
            cur.execute("DELETE FROM tokens WHERE account = %s", [account])
            return True

        return self._run(work)
