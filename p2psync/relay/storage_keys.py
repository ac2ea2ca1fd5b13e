"""What the relay keeps of devices and key epochs (protocol/relay.md §5), as part of SqliteStorage.

Tables (relay/storage_migrations.py, schema 2): `devices` (each device that proved its key, with its
agreement key and the proof), `revocations` (who cut off whom, with the revoker's signature),
`key_epochs` and `key_wraps` (each epoch's public record and the copies of its key sealed for
members); `tokens.device` ties a token to one device. Like the rest of the storage, every method
is one transaction, called from the storage thread.

Revoking a device also drops the change sets it stored past what its revoker accepts of it (the
members would refuse them anyway, and a cursor must not stop in front of them forever), and every
token not tied to a device (logins made before devices existed: nobody can tell whose they are).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import RLock
from typing import TYPE_CHECKING, Protocol

from p2psync.errors import Conflict, P2PSyncError


class DeviceRevoked(P2PSyncError):
    """The device was removed from the library: the relay serves it nothing any more."""

    def __init__(self, device: str, by: str) -> None:
        super().__init__(
            f"This device ({device[:7]}) was removed from the library by {by[:7]}; the relay no longer serves it."
        )
        self.device, self.by = device, by


class EpochMoved(Conflict):
    """A blob or a new key epoch that does not fit the account's current key epoch."""

    def __init__(self, current: int, message: str) -> None:
        super().__init__(message)
        self.current = current


class NotBound(Conflict):
    pass


@dataclass(frozen=True)
class TokenSession:
    account: str
    expires: float
    device: str | None  # None: a login made before tokens were tied to devices
    revoked_by: str | None  # the device's revoker, if it was removed


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    public_key: bytes
    agreement_key: bytes
    proof_time: int
    proof_signature: bytes
    registered: float


@dataclass(frozen=True)
class Revocation:
    device: str
    by: str
    upto: int
    signature: bytes
    at: float


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    by: str
    check: bytes
    previous: bytes
    signature: bytes


@dataclass(frozen=True)
class KeysView:
    """What GET /keys answers one device: the epochs, the account's copy, and that device's copies."""

    epoch: int
    rotate: bool  # a device was revoked while the current epoch's key was in force
    revoked: list[str]
    wrapped_key: bytes | None
    wrapped_epoch: int
    epochs: list[EpochRecord]
    sealed: list[tuple[int, bytes]]


@dataclass(frozen=True)
class RevokeResult:
    already: bool
    dropped: int  # change sets of the device dropped (past upto)


class KeyStore(Protocol):
    """The devices-and-keys part of the RelayStorage interface (storage.py)."""

    def token_session(self, token_hash: bytes) -> TokenSession | None:
        """The account, expiry, device and revoker of a token, or None if the relay does not know it."""
        ...

    def register_device(self, account: str, record: DeviceRecord) -> None: ...

    def tie_token(self, token_hash: bytes, device: str) -> bool: ...

    def devices(self, account: str) -> tuple[list[DeviceRecord], list[Revocation]]: ...

    def public_key(self, account: str, device: str) -> bytes | None: ...

    def revoke(self, account: str, by: str, device: str, upto: int, signature: bytes, now: float) -> RevokeResult: ...

    def keys(self, account: str, device: str) -> KeysView: ...

    def rotate(
        self,
        account: str,
        record: EpochRecord,
        account_wrapped: bytes | None,
        sealed: Sequence[tuple[str, bytes]],
        now: float,
    ) -> int: ...

    def set_account_key(self, account: str, epoch: int, wrapped: bytes) -> bool: ...


class KeyStorage:
    """The devices-and-keys half of SqliteStorage (mixed into it: same database, lock, transactions)."""

    db: sqlite3.Connection
    _lock: RLock

    if TYPE_CHECKING:

        def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def _blob_path(self, account: str, relative: str) -> Path: ...

    def token_session(self, token_hash: bytes) -> TokenSession | None:
        with self._lock:
            row = self.db.execute(
                "SELECT t.account, t.expires, t.device, r.by_device FROM tokens t "
                "LEFT JOIN revocations r ON r.account = t.account AND r.device = t.device WHERE t.hash = ?",
                [token_hash],
            ).fetchone()
        return TokenSession(row[0], row[1], row[2], row[3]) if row else None

    def register_device(self, account: str, record: DeviceRecord) -> None:
        """Keep (or refresh) a device's proof; DeviceRevoked if the device was removed."""
        with self._lock, self._tx() as db:
            row = db.execute(
                "SELECT by_device FROM revocations WHERE account = ? AND device = ?", [account, record.device]
            ).fetchone()
            if row:
                raise DeviceRevoked(record.device, row[0])
            db.execute(
                "INSERT INTO devices (account, device, public_key, agreement_key, proof_time, proof_signature, "
                "registered) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, device) DO UPDATE SET "
                "agreement_key = excluded.agreement_key, proof_time = excluded.proof_time, "
                "proof_signature = excluded.proof_signature",
                [account, record.device, record.public_key, record.agreement_key, record.proof_time,
                 record.proof_signature, record.registered],
            )  # fmt: skip

    def tie_token(self, token_hash: bytes, device: str) -> bool:
        """Tie a token made before devices existed to a device; False if it is tied to another."""
        with self._lock, self._tx() as db:
            row = db.execute("SELECT device FROM tokens WHERE hash = ?", [token_hash]).fetchone()
            if row is None or row[0] not in (None, device):
                return False
            db.execute("UPDATE tokens SET device = ? WHERE hash = ?", [device, token_hash])
        return True

    def devices(self, account: str) -> tuple[list[DeviceRecord], list[Revocation]]:
        with self._lock:
            devices = [
                DeviceRecord(*row)
                for row in self.db.execute(
                    "SELECT device, public_key, agreement_key, proof_time, proof_signature, registered FROM devices "
                    "WHERE account = ? ORDER BY registered, device",
                    [account],
                )
            ]
            revocations = [
                Revocation(*row)
                for row in self.db.execute(
                    "SELECT device, by_device, upto, signature, at FROM revocations WHERE account = ? ORDER BY at",
                    [account],
                )
            ]
        return devices, revocations

    def public_key(self, account: str, device: str) -> bytes | None:
        with self._lock:
            row = self.db.execute(
                "SELECT public_key FROM devices WHERE account = ? AND device = ?", [account, device]
            ).fetchone()
        return bytes(row[0]) if row else None

    def revoke(self, account: str, by: str, device: str, upto: int, signature: bytes, now: float) -> RevokeResult:
        """Cut `device` off the account (relay.md §5.3). The caller checked the signature."""
        with self._lock:
            with self._tx() as db:
                if db.execute(
                    "SELECT 1 FROM revocations WHERE account = ? AND device = ?", [account, device]
                ).fetchone():
                    return RevokeResult(True, 0)
                db.execute(
                    "INSERT INTO revocations (account, device, by_device, upto, signature, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [account, device, by, upto, signature, now],
                )
                db.execute("DELETE FROM tokens WHERE account = ? AND device IS NULL", [account])
                dropped = db.execute(
                    "SELECT num, size, blob FROM changesets WHERE account = ? AND device = ? AND last > ?",
                    [account, device, upto],
                ).fetchall()
                if dropped:
                    db.execute(
                        "DELETE FROM changesets WHERE account = ? AND device = ? AND last > ?", [account, device, upto]
                    )
                    db.execute(
                        "UPDATE accounts SET used_bytes = used_bytes - ? WHERE id = ?",
                        [sum(size for _, size, _ in dropped), account],
                    )
                    (head,) = db.execute(
                        "SELECT max(last) FROM changesets WHERE account = ? AND device = ?", [account, device]
                    ).fetchone()
                    if head is None:
                        db.execute("DELETE FROM heads WHERE account = ? AND device = ?", [account, device])
                    else:
                        db.execute(
                            "UPDATE heads SET last = ? WHERE account = ? AND device = ?", [head, account, device]
                        )
            for _, _, name in dropped:  # after the commit: a crash leaves at worst an unreferenced file
                with contextlib.suppress(OSError):
                    self._blob_path(account, name).unlink()
        return RevokeResult(False, len(dropped))

    def keys(self, account: str, device: str) -> KeysView:
        with self._lock:
            epoch, wrapped, wrapped_epoch = self.db.execute(
                "SELECT key_epoch, wrapped_key, wrapped_epoch FROM accounts WHERE id = ?", [account]
            ).fetchone()
            revoked = [r[0] for r in self.db.execute("SELECT device FROM revocations WHERE account = ?", [account])]
            (uncovered,) = self.db.execute(
                "SELECT count(*) FROM revocations WHERE account = ? AND covered = 0", [account]
            ).fetchone()
            epochs = [
                EpochRecord(*row)
                for row in self.db.execute(
                    "SELECT epoch, by_device, key_check, previous, signature FROM key_epochs WHERE account = ? "
                    "ORDER BY epoch",
                    [account],
                )
            ]
            sealed = [
                (e, bytes(s))
                for e, s in self.db.execute(
                    "SELECT epoch, sealed FROM key_wraps WHERE account = ? AND device = ? ORDER BY epoch",
                    [account, device],
                )
            ]
        return KeysView(epoch, uncovered > 0, revoked, wrapped, wrapped_epoch, epochs, sealed)

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
        with self._lock, self._tx() as db:
            current, library_id = db.execute(
                "SELECT key_epoch, library_id FROM accounts WHERE id = ?", [account]
            ).fetchone()
            if library_id is None:
                raise NotBound("The account holds no library; there is no library key to change.")
            if record.epoch != current + 1:
                raise EpochMoved(current, f"The account's library key is at epoch {current}; read it again.")
            revoked = {r[0] for r in db.execute("SELECT device FROM revocations WHERE account = ?", [account])}
            kept = [(device, blob) for device, blob in sealed if device not in revoked]
            db.execute(
                "INSERT INTO key_epochs (account, epoch, by_device, key_check, previous, signature, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [account, record.epoch, record.by, record.check, record.previous, record.signature, now],
            )
            db.executemany(
                "INSERT INTO key_wraps (account, epoch, device, sealed) VALUES (?, ?, ?, ?)",
                [(account, record.epoch, device, blob) for device, blob in kept],
            )
            db.execute("UPDATE accounts SET key_epoch = ? WHERE id = ?", [record.epoch, account])
            if account_wrapped is not None:
                db.execute(
                    "UPDATE accounts SET wrapped_key = ?, wrapped_epoch = ? WHERE id = ?",
                    [account_wrapped, record.epoch, account],
                )
            db.execute("UPDATE revocations SET covered = 1 WHERE account = ?", [account])
        return len(kept)

    def set_account_key(self, account: str, epoch: int, wrapped: bytes) -> bool:
        """Replace the account's copy with a newer epoch's (never an older one)."""
        with self._lock, self._tx() as db:
            current, old = db.execute(
                "SELECT key_epoch, wrapped_epoch FROM accounts WHERE id = ?", [account]
            ).fetchone()
            if not old <= epoch <= current:
                return False
            db.execute(
                "UPDATE accounts SET wrapped_key = ?, wrapped_epoch = ? WHERE id = ? AND library_id IS NOT NULL",
                [wrapped, epoch, account],
            )
        return True

    def _forget_keys(self, db: sqlite3.Connection, account: str) -> None:
        """A purge: the account's key epochs go with its data (revocations stay: a removed device stays out)."""
        db.execute("DELETE FROM key_epochs WHERE account = ?", [account])
        db.execute("DELETE FROM key_wraps WHERE account = ?", [account])
        db.execute("UPDATE accounts SET key_epoch = 0, wrapped_epoch = 0 WHERE id = ?", [account])
