"""The devices-and-keys half of PostgresStorage (storage_pg.py), mixed into it: storage_keys.py's
rules on PostgreSQL. Writes lock the account's row first, so a revocation, a rotation, a device's
registration and a push of the same account never interleave, whichever processes run them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from p2psync.relay.storage_keys import (
    DeviceRecord,
    DeviceRevoked,
    EpochMoved,
    EpochRecord,
    KeysView,
    NotBound,
    Revocation,
    RevokeResult,
    TokenSession,
)

if TYPE_CHECKING:
    from p2psync.relay.storage_blobs import BlobStore

T = TypeVar("T")
Cursor = Any  # a psycopg cursor


def _b(value: Any) -> bytes:
    return bytes(value)


class PgKeys:
    blobs: BlobStore

    if TYPE_CHECKING:

        def _run(self, work: Callable[[Cursor], T], snapshot: bool = False) -> T: ...

        @staticmethod
        def _lock_account(cur: Cursor, account: str, columns: str) -> tuple[Any, ...]: ...

    def token_session(self, token_hash: bytes) -> TokenSession | None:
        row = self._run(
            lambda cur: cur.execute(
                "SELECT t.account, t.expires, t.device, r.by_device FROM tokens t "
                "LEFT JOIN revocations r ON r.account = t.account AND r.device = t.device WHERE t.hash = %s",
                [token_hash],
            ).fetchone()
        )
        return TokenSession(row[0], row[1], row[2], row[3]) if row else None

    def register_device(self, account: str, record: DeviceRecord) -> None:
        """Keep (or refresh) a device's proof; DeviceRevoked if the device was removed."""

        def work(cur: Cursor) -> None:
            self._lock_account(cur, account, "id")
            row = cur.execute(
                "SELECT by_device FROM revocations WHERE account = %s AND device = %s", [account, record.device]
            ).fetchone()
            if row:
                raise DeviceRevoked(record.device, row[0])
            cur.execute(
                "INSERT INTO devices (account, device, public_key, agreement_key, proof_time, proof_signature, "
                "registered) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (account, device) DO UPDATE SET "
                "agreement_key = excluded.agreement_key, proof_time = excluded.proof_time, "
                "proof_signature = excluded.proof_signature",
                [account, record.device, record.public_key, record.agreement_key, record.proof_time,
                 record.proof_signature, record.registered],
            )  # fmt: skip

        self._run(work)

    def tie_token(self, token_hash: bytes, device: str) -> bool:
        """Tie a token made before devices existed to a device; False if it is tied to another."""

        def work(cur: Cursor) -> bool:
            row = cur.execute("SELECT device FROM tokens WHERE hash = %s FOR UPDATE", [token_hash]).fetchone()
            if row is None or row[0] not in (None, device):
                return False
            cur.execute("UPDATE tokens SET device = %s WHERE hash = %s", [device, token_hash])
            return True

        return self._run(work)

    def devices(self, account: str) -> tuple[list[DeviceRecord], list[Revocation]]:
        def work(cur: Cursor) -> tuple[list[DeviceRecord], list[Revocation]]:
            devices = [
                DeviceRecord(row[0], _b(row[1]), _b(row[2]), row[3], _b(row[4]), row[5])
                for row in cur.execute(
                    "SELECT device, public_key, agreement_key, proof_time, proof_signature, registered FROM devices "
                    "WHERE account = %s ORDER BY registered, device",
                    [account],
                ).fetchall()
            ]
            revocations = [
                Revocation(row[0], row[1], row[2], _b(row[3]), row[4])
                for row in cur.execute(
                    "SELECT device, by_device, upto, signature, at FROM revocations WHERE account = %s "
                    "ORDER BY at, device",
                    [account],
                ).fetchall()
            ]
            return devices, revocations

        return self._run(work, snapshot=True)

    def public_key(self, account: str, device: str) -> bytes | None:
        row = self._run(
            lambda cur: cur.execute(
                "SELECT public_key FROM devices WHERE account = %s AND device = %s", [account, device]
            ).fetchone()
        )
        return bytes(row[0]) if row else None

    def revoke(self, account: str, by: str, device: str, upto: int, signature: bytes, now: float) -> RevokeResult:
        """Cut `device` off the account (relay.md §5.3). The caller checked the signature."""

        def work(cur: Cursor) -> RevokeResult:
            self._lock_account(cur, account, "id")
            inserted = cur.execute(
                "INSERT INTO revocations (account, device, by_device, upto, signature, at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account, device) DO NOTHING",
                [account, device, by, upto, signature, now],
            ).rowcount
            if not inserted:
                return RevokeResult(True, 0)
            cur.execute("DELETE FROM tokens WHERE account = %s AND device IS NULL", [account])
            dropped = cur.execute(
                "DELETE FROM changesets WHERE account = %s AND device = %s AND last > %s RETURNING size, blob",
                [account, device, upto],
            ).fetchall()
            if dropped:
                cur.execute(
                    "UPDATE accounts SET used_bytes = used_bytes - %s WHERE id = %s",
                    [sum(size for size, _ in dropped), account],
                )
                (head,) = cur.execute(
                    "SELECT max(last) FROM changesets WHERE account = %s AND device = %s", [account, device]
                ).fetchone()
                if head is None:
                    cur.execute("DELETE FROM heads WHERE account = %s AND device = %s", [account, device])
                else:
                    cur.execute(
                        "UPDATE heads SET last = %s WHERE account = %s AND device = %s", [head, account, device]
                    )
                self.blobs.drop(cur, account, [name for _, name in dropped])
            return RevokeResult(False, len(dropped))

        return self._run(work)

    def keys(self, account: str, device: str) -> KeysView:
        def work(cur: Cursor) -> KeysView:
            epoch, wrapped, wrapped_epoch = cur.execute(
                "SELECT key_epoch, wrapped_key, wrapped_epoch FROM accounts WHERE id = %s", [account]
            ).fetchone()
            revoked = [
                r[0]
                for r in cur.execute(
                    "SELECT device FROM revocations WHERE account = %s ORDER BY at, device", [account]
                ).fetchall()
            ]
            (uncovered,) = cur.execute(
                "SELECT count(*) FROM revocations WHERE account = %s AND covered = 0", [account]
            ).fetchone()
            epochs = [
                EpochRecord(row[0], row[1], _b(row[2]), _b(row[3]), _b(row[4]))
                for row in cur.execute(
                    "SELECT epoch, by_device, key_check, previous, signature FROM key_epochs WHERE account = %s "
                    "ORDER BY epoch",
                    [account],
                ).fetchall()
            ]
            sealed = [
                (e, _b(s))
                for e, s in cur.execute(
                    "SELECT epoch, sealed FROM key_wraps WHERE account = %s AND device = %s ORDER BY epoch",
                    [account, device],
                ).fetchall()
            ]
            copy = _b(wrapped) if wrapped is not None else None
            return KeysView(epoch, uncovered > 0, revoked, copy, wrapped_epoch, epochs, sealed)

        return self._run(work, snapshot=True)

    def rotate(
        self,
        account: str,
        record: EpochRecord,
        account_wrapped: bytes | None,
        sealed: Sequence[tuple[str, bytes]],
        now: float,
    ) -> int:
        """Put a new key epoch in force; EpochMoved unless it is the current one + 1. Copies for
        revoked devices are not kept. Returns how many copies were kept."""

        def work(cur: Cursor) -> int:
            current, library_id = self._lock_account(cur, account, "key_epoch, library_id")
            if library_id is None:
                raise NotBound("The account holds no library; there is no library key to change.")
            if record.epoch != current + 1:
                raise EpochMoved(current, f"The account's library key is at epoch {current}; read it again.")
            revoked = {
                r[0] for r in cur.execute("SELECT device FROM revocations WHERE account = %s", [account]).fetchall()
            }
            kept = [(device, blob) for device, blob in sealed if device not in revoked]
            cur.execute(
                "INSERT INTO key_epochs (account, epoch, by_device, key_check, previous, signature, created) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [account, record.epoch, record.by, record.check, record.previous, record.signature, now],
            )
            if kept:
                cur.executemany(
                    "INSERT INTO key_wraps (account, epoch, device, sealed) VALUES (%s, %s, %s, %s)",
                    [(account, record.epoch, device, blob) for device, blob in kept],
                )
            cur.execute("UPDATE accounts SET key_epoch = %s WHERE id = %s", [record.epoch, account])
            if account_wrapped is not None:
                cur.execute(
                    "UPDATE accounts SET wrapped_key = %s, wrapped_epoch = %s WHERE id = %s",
                    [account_wrapped, record.epoch, account],
                )
            cur.execute("UPDATE revocations SET covered = 1 WHERE account = %s", [account])
            return len(kept)

        return self._run(work)

    def set_account_key(self, account: str, epoch: int, wrapped: bytes) -> bool:
        """Replace the account's copy with a newer epoch's (never an older one)."""

        def work(cur: Cursor) -> bool:
            current, old = self._lock_account(cur, account, "key_epoch, wrapped_epoch")
            if not old <= epoch <= current:
                return False
            cur.execute(
                "UPDATE accounts SET wrapped_key = %s, wrapped_epoch = %s WHERE id = %s AND library_id IS NOT NULL",
                [wrapped, epoch, account],
            )
            return True

        return self._run(work)

    @staticmethod
    def _forget_keys(cur: Cursor, account: str) -> None:
        """A purge: the account's key epochs go with its data (revocations stay: a removed device stays out)."""
        cur.execute("DELETE FROM key_epochs WHERE account = %s", [account])
        cur.execute("DELETE FROM key_wraps WHERE account = %s", [account])
        cur.execute("UPDATE accounts SET key_epoch = 0, wrapped_epoch = 0 WHERE id = %s", [account])
