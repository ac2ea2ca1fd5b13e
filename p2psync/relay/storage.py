"""What the relay keeps, behind one interface: `RelayStorage`.

`SqliteStorage` is the embedded backend that `p2psync relay serve` uses by default: one SQLite
database (accounts, tokens, login attempts, the index of change sets and chunks) and the blobs
themselves as files, named by their SHA-256 so a file is either whole at its name or absent.
`PostgresStorage` (storage_pg.py) implements the same Protocol on PostgreSQL for several relay
processes on one database (`relay serve --database`); tests/test_relay_storage_contract.py holds
both to the same answers.

Every method is synchronous and does one whole operation: a request the relay refuses (a gap, a
quota) leaves nothing behind, and a crash at any point leaves either the operation done or not
at all (at worst an unreferenced blob file, which is harmless). The server calls the methods from
`workers` threads (one for SQLite); `SqliteStorage` also serialises them itself, so any thread may call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import RLock
from typing import IO, Any, Protocol

from p2psync.errors import Conflict, P2PSyncError
from p2psync.relay import storage_migrations as migrations
from p2psync.relay import storage_recovery as recovery
from p2psync.relay.outcomes import BindOutcome
from p2psync.relay.passwords import FAILED_LOGIN_WINDOW, MAX_FAILED_LOGINS, retry_after
from p2psync.relay.storage_data import ChangeSetIn, ChangeSetStorage, Gap, PushResult, QuotaExceeded, StoredChangeSet
from p2psync.relay.storage_keys import KeyStorage, KeyStore
from p2psync.relay.storage_recovery import RecoveryStorage, RecoveryStore

log = logging.getLogger("p2psync.relay")

__all__ = [
    "AccountInfo",
    "AlreadyBound",
    "ChangeSetIn",
    "Claim",
    "EmailTaken",
    "Gap",
    "LoginRecord",
    "PurgeResult",
    "PushResult",
    "QuotaExceeded",
    "RelayStorage",
    "SqliteStorage",
    "StorageLocked",
    "StoredChangeSet",
]

CLAIM_TABLES = {"login": "login_attempts", "signup": "signup_attempts"}
SCHEMA_VERSION = migrations.LATEST  # numbered migrations: relay/storage_migrations.py
TOKEN_GRACE = 30 * 86400  # expired tokens are kept this long so they answer "expired", not "unknown"

# --- what the storage refuses ------------------------------------------------------------------


class EmailTaken(Conflict):
    pass


class AlreadyBound(Conflict):
    def __init__(self, library_id: str) -> None:
        super().__init__("This account is already bound to another library.")
        self.library_id = library_id


class StorageLocked(P2PSyncError):
    """Another relay process uses the same data folder."""


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    account: str
    email: str
    library_id: str | None
    wrapped_key: bytes | None
    used_bytes: int
    change_sets: int
    chunks: int
    key_epoch: int = 0  # the library key's epoch in force (relay.md §5)
    wrapped_epoch: int = 0  # the epoch of the key in wrapped_key


@dataclass(frozen=True)
class LoginRecord:
    account: str
    salt: bytes
    login_hash: bytes
    kdf: str | None = None  # the account's key derivation (relay/kdf.py, as JSON); None: the first release's


@dataclass(frozen=True)
class Claim:
    """An attempt (a login, a sign-up) counted against its limit before it is made, or the wait
    the limit imposes (then nothing was counted). `release_claim` takes a counted one back."""

    kind: str  # "login" or "signup"
    wait: int | None  # seconds until an attempt may be made; None: this one may go ahead
    attempt: int | None  # the counted attempt's id (None when refused)


@dataclass(frozen=True)
class PurgeResult:
    change_sets: int
    chunks: int
    bytes: int


class RelayStorage(KeyStore, RecoveryStore, Protocol):
    """The relay's storage. Times are Unix seconds given by the caller (the server's clock)."""

    workers: int  # how many threads may call it at once (the server's storage threads)

    # accounts and tokens
    def create_account(self, email: str, salt: bytes, login_hash: bytes, now: float, kdf: str | None = None) -> str:
        """A new account's id; EmailTaken if the address has one."""
        ...

    def claim_signup(self, client: str, now: float, limit: int, window: float) -> Claim:
        """Count a sign-up from this client address, or the wait if `limit` were passed in `window`:
        one transaction, so sign-ups at once through any relay processes never pass the limit."""
        ...

    def set_login(self, account: str, salt: bytes, login_hash: bytes, wrapped_key: bytes | None, kdf: str) -> None:
        """The same password's keys with new derivation parameters: login hash, wrapped key (if bound)
        and kdf replaced; every token stays."""
        ...

    def login_record(self, email: str) -> LoginRecord | None: ...

    def claim_login(self, email: str, client: str, now: float, limit: int = ..., window: float = ...) -> Claim:
        """Count a login attempt for this e-mail from this client as failed before it is checked, or
        the wait if either has `limit` failures in `window`: one transaction, so guesses at once
        through any relay processes never pass the limit. A right key releases the claim."""
        ...

    def release_claim(self, claim: Claim) -> None:
        """Take back a counted attempt (a login with the right key, a sign-up that made no account)."""
        ...

    def add_token(self, account: str, token_hash: bytes, expires: float, now: float, device: str | None = None) -> None:
        """A token of the account, tied to `device` (relay.md §5.1)."""
        ...

    def delete_token(self, token_hash: bytes) -> None: ...

    def account_info(self, account: str) -> AccountInfo: ...

    def change_password(
        self,
        account: str,
        salt: bytes,
        login_hash: bytes,
        wrapped_key: bytes | None,
        keep_token: bytes,
        kdf: str | None = None,
    ) -> None:
        """Replace the login hash, the wrapped key and the kdf; every token but keep_token stops working."""
        ...

    def bind(self, account: str, library_id: str, wrapped_key: bytes) -> BindOutcome:
        """NEW or SAME; AlreadyBound if bound to another library."""
        ...

    def purge(self, account: str) -> PurgeResult: ...

    # change sets
    def state(self, account: str) -> tuple[dict[str, int], int]:
        """({device: last}, the highest num given out)."""
        ...

    def push(self, account: str, items: Sequence[ChangeSetIn], quota: int | None) -> PushResult:
        """Store items in order, whole or not at all: Gap, QuotaExceeded."""
        ...

    def pull(self, account: str, after: int, limit: int, max_bytes: int) -> tuple[list[StoredChangeSet], bool]:
        """Change sets with num > after in num order (at least one if any), and whether more follow."""
        ...

    # chunks
    def have_chunks(self, account: str, ids: Sequence[str]) -> list[bool]: ...

    def put_chunk(self, account: str, chunk_id: str, blob: bytes, quota: int | None, key_epoch: int = 0) -> bool:
        """True if stored, False if it was there already; QuotaExceeded."""
        ...

    def get_chunk(self, account: str, chunk_id: str) -> tuple[bytes, int] | None:
        """(blob, key epoch) of a chunk, or None."""
        ...

    def ping(self) -> None:
        """Raise if the storage cannot answer (the health check)."""
        ...

    def close(self) -> None: ...


def login_limit_wait(
    by_email: Sequence[Sequence[float]], by_client: Sequence[Sequence[float]], now: float, limit: int, window: float
) -> int | None:
    """The wait the failed-login limit imposes, from the attempts (rows of `at`) of the e-mail and
    of the client in the window: the longer of the two, None if neither is at the limit."""
    waits = [retry_after([r[0] for r in rows], now, limit, window) for rows in (by_email, by_client)]
    return max((w for w in waits if w is not None), default=None)


# --- SQLite and files --------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    salt BLOB NOT NULL,
    login_hash BLOB NOT NULL,
    library_id TEXT,
    wrapped_key BLOB,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    next_num INTEGER NOT NULL DEFAULT 1,  -- never reset, not even by purge: a num is never reused
    epoch INTEGER NOT NULL DEFAULT 0,  -- the blob folder in use; a purge moves on to the next one
    created REAL NOT NULL,
    kdf TEXT  -- how the device derives the login key (relay.md §1, JSON); NULL: the first release's scrypt
);
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(id),
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_account ON tokens(account);
CREATE INDEX IF NOT EXISTS tokens_expires ON tokens(expires);
CREATE TABLE IF NOT EXISTS login_attempts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    client TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_email ON login_attempts(email, at);
CREATE INDEX IF NOT EXISTS attempts_client ON login_attempts(client, at);
CREATE INDEX IF NOT EXISTS attempts_at ON login_attempts(at);
CREATE TABLE IF NOT EXISTS signup_attempts (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS signups_client ON signup_attempts(client, at);
CREATE TABLE IF NOT EXISTS heads (
    account TEXT NOT NULL,
    device TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (account, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changesets (
    account TEXT NOT NULL,
    num INTEGER NOT NULL,
    device TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL,  -- the file, under blobs/ACCOUNT/: EPOCH/HH/SHA256 (hex SHA-256 of the blob)
    PRIMARY KEY (account, num)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    account TEXT NOT NULL,
    id TEXT NOT NULL,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
-- blob folders of purged accounts, deleted after the purge committed (again at start after a crash)
CREATE TABLE IF NOT EXISTS doomed (
    account TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (account, epoch)
) WITHOUT ROWID;
"""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteStorage(ChangeSetStorage, KeyStorage, RecoveryStorage):
    """RelayStorage on SQLite (WAL, synchronous=FULL) plus blob files under data_dir:

    data_dir/relay.sqlite3   accounts, tokens, attempts, the index of change sets and chunks
    data_dir/blobs/ACCOUNT/EPOCH/HH/SHA256   each blob, written to tmp/, fsynced, renamed into place
    data_dir/tmp/, trash/    emptied at every start
    data_dir/lock            held while a relay uses the folder (one process per folder)
    """

    workers = 1  # one writer at a time is what SQLite does anyway

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.blobs = self.data_dir / "blobs"
        self.tmp = self.data_dir / "tmp"
        self.trash = self.data_dir / "trash"
        self._lock = RLock()
        self._reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-reaper")
        for folder in (self.data_dir, self.blobs, self.tmp, self.trash):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_folder_lock()
        self.db = sqlite3.connect(self.data_dir / "relay.sqlite3", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")  # an answered write survives a power cut
        self.db.execute("PRAGMA busy_timeout = 10000")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(_SCHEMA)
        if "kdf" not in {row[1] for row in self.db.execute("PRAGMA table_info(accounts)")}:
            self.db.execute("ALTER TABLE accounts ADD COLUMN kdf TEXT")  # data of the first release
        # A new folder starts as the first release's schema 1 and is migrated like an old one.
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1')")
        migrations.upgrade(self.db, self.data_dir)
        self._clean_at_start()

    def _take_folder_lock(self) -> IO[bytes] | None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, one relay per folder is then the operator's care
            return None
        handle = open(self.data_dir / "lock", "ab")  # noqa: SIM115 (held open for the storage's life)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StorageLocked(
                f"Another relay is using {self.data_dir}; stop it or give this one another --data folder."
            ) from None
        return handle

    def _clean_at_start(self) -> None:
        for folder in (self.tmp, self.trash):
            for entry in folder.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for account, epoch in self.db.execute("SELECT account, epoch FROM doomed").fetchall():
            self._discard_folder(account, epoch, wait=True)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so that it never fails half-way on a lock upgrade."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # an I/O error may have rolled it back already
                self.db.execute("ROLLBACK")
            raise

    # --- blob files ----------------------------------------------------------------------------

    def _blob_path(self, account: str, relative: str) -> Path:
        return self.blobs / account / relative

    def _make_dirs(self, folder: Path) -> None:
        """Create folder (and parents under blobs/) durably: each new entry's parent is fsynced."""
        if folder.is_dir():
            return
        self._make_dirs(folder.parent)
        folder.mkdir(exist_ok=True)
        _fsync_dir(folder.parent)

    def _write_blob(self, account: str, epoch: int, data: bytes, created: list[Path]) -> str:
        """Write data under its SHA-256 (temp file, fsync, rename) and return its path under the
        account's folder; appends the path to `created` if this call made it, so that a rollback
        can take it back. The caller fsyncs the folders."""
        name = hashlib.sha256(data).hexdigest()
        relative = f"{epoch}/{name[:2]}/{name}"
        path = self._blob_path(account, relative)
        if path.exists():  # content-named: a file at its name is whole (renamed in only after fsync)
            return relative
        self._make_dirs(path.parent)
        tmp = self.tmp / f"{name}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        created.append(path)
        return relative

    def _store_blobs(self, account: str, epoch: int, blobs: Sequence[bytes], created: list[Path]) -> list[str]:
        names = [self._write_blob(account, epoch, data, created) for data in blobs]
        for folder in {p.parent for p in created}:
            _fsync_dir(folder)  # the renames are durable before the database points at them
        return names

    @staticmethod
    def _take_back(created: list[Path]) -> None:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()

    def _read_blob(self, account: str, relative: str) -> bytes | None:
        """The blob, or None if its file is gone (a damaged data folder): the item is then left
        out, which the devices see and report as withheld, rather than failing every request."""
        try:
            return self._blob_path(account, relative).read_bytes()
        except FileNotFoundError:
            log.error("blob file %s of account %s is missing from the data folder", relative, account)
            return None

    def _discard_folder(self, account: str, epoch: int, wait: bool = False) -> None:
        """Move a purged epoch's blob folder out of the way, delete it in the background. New blobs
        go to the next epoch's folder, so this can never take a blob stored after the purge."""
        folder = self.blobs / account / str(epoch)
        if folder.exists():
            target = self.trash / f"{account}.{epoch}.{secrets.token_hex(6)}"
            os.replace(folder, target)
            _fsync_dir(folder.parent)
            future = self._reaper.submit(shutil.rmtree, target, True)
            if wait:
                future.result()
        self.db.execute("DELETE FROM doomed WHERE account = ? AND epoch = ?", [account, epoch])

    # --- accounts and tokens -------------------------------------------------------------------

    def create_account(self, email: str, salt: bytes, login_hash: bytes, now: float, kdf: str | None = None) -> str:
        account = secrets.token_hex(16)
        with self._lock:
            try:
                with self._tx() as db:
                    db.execute(
                        "INSERT INTO accounts (id, email, salt, login_hash, created, kdf) VALUES (?, ?, ?, ?, ?, ?)",
                        [account, email, salt, login_hash, now, kdf],
                    )
            except sqlite3.IntegrityError:
                raise EmailTaken("An account with this e-mail address exists already; log in instead.") from None
        return account

    def login_record(self, email: str) -> LoginRecord | None:
        with self._lock:
            row = self.db.execute("SELECT id, salt, login_hash, kdf FROM accounts WHERE email = ?", [email]).fetchone()
        return LoginRecord(row[0], row[1], row[2], row[3]) if row else None

    def claim_signup(self, client: str, now: float, limit: int, window: float) -> Claim:
        with self._lock, self._tx() as db:
            db.execute("DELETE FROM signup_attempts WHERE at <= ?", [now - window])
            rows = db.execute("SELECT at FROM signup_attempts WHERE client = ?", [client]).fetchall()
            wait = retry_after([r[0] for r in rows], now, limit, window)
            if wait is not None:
                return Claim("signup", wait, None)
            made = db.execute("INSERT INTO signup_attempts (client, at) VALUES (?, ?)", [client, now])
            return Claim("signup", None, made.lastrowid)

    def set_login(self, account: str, salt: bytes, login_hash: bytes, wrapped_key: bytes | None, kdf: str) -> None:
        with self._lock, self._tx() as db:
            db.execute(
                "UPDATE accounts SET salt = ?, login_hash = ?, kdf = ?, "
                "wrapped_key = CASE WHEN library_id IS NULL THEN NULL ELSE ? END WHERE id = ?",
                [salt, login_hash, kdf, wrapped_key, account],
            )

    def claim_login(
        self,
        email: str,
        client: str,
        now: float,
        limit: int = MAX_FAILED_LOGINS,
        window: float = FAILED_LOGIN_WINDOW,
    ) -> Claim:
        with self._lock, self._tx() as db:
            db.execute("DELETE FROM login_attempts WHERE at <= ?", [now - window])
            by_email = db.execute("SELECT at FROM login_attempts WHERE email = ?", [email]).fetchall()
            by_client = db.execute("SELECT at FROM login_attempts WHERE client = ?", [client]).fetchall()
            wait = login_limit_wait(by_email, by_client, now, limit, window)
            if wait is not None:
                return Claim("login", wait, None)
            made = db.execute("INSERT INTO login_attempts (email, client, at) VALUES (?, ?, ?)", [email, client, now])
            return Claim("login", None, made.lastrowid)

    def release_claim(self, claim: Claim) -> None:
        if claim.attempt is not None:
            with self._lock:
                self.db.execute(f"DELETE FROM {CLAIM_TABLES[claim.kind]} WHERE id = ?", [claim.attempt])

    def add_token(self, account: str, token_hash: bytes, expires: float, now: float, device: str | None = None) -> None:
        with self._lock, self._tx() as db:
            db.execute("DELETE FROM tokens WHERE expires < ?", [now - TOKEN_GRACE])
            db.execute(
                "INSERT INTO tokens (hash, account, expires, device) VALUES (?, ?, ?, ?)",
                [token_hash, account, expires, device],
            )

    def delete_token(self, token_hash: bytes) -> None:
        with self._lock:
            self.db.execute("DELETE FROM tokens WHERE hash = ?", [token_hash])

    def account_info(self, account: str) -> AccountInfo:
        with self._lock:
            row = self.db.execute(
                "SELECT email, library_id, wrapped_key, used_bytes, key_epoch, wrapped_epoch FROM accounts "
                "WHERE id = ?",
                [account],
            ).fetchone()
            if row is None:
                raise KeyError(account)
            change_sets = self.db.execute("SELECT count(*) FROM changesets WHERE account = ?", [account]).fetchone()[0]
            chunks = self.db.execute("SELECT count(*) FROM chunks WHERE account = ?", [account]).fetchone()[0]
        return AccountInfo(account, row[0], row[1], row[2], row[3], change_sets, chunks, row[4], row[5])

    def change_password(
        self,
        account: str,
        salt: bytes,
        login_hash: bytes,
        wrapped_key: bytes | None,
        keep_token: bytes,
        kdf: str | None = None,
    ) -> None:
        with self._lock, self._tx() as db:
            # An unbound account has no wrapped key to replace: it stays null (relay.md §3, /account).
            db.execute(
                "UPDATE accounts SET salt = ?, login_hash = ?, kdf = ?, "
                "wrapped_key = CASE WHEN library_id IS NULL THEN NULL ELSE ? END WHERE id = ?",
                [salt, login_hash, kdf, wrapped_key, account],
            )
            db.execute("DELETE FROM tokens WHERE account = ? AND hash != ?", [account, keep_token])

    def bind(self, account: str, library_id: str, wrapped_key: bytes) -> BindOutcome:
        with self._lock, self._tx() as db:
            row = db.execute("SELECT library_id FROM accounts WHERE id = ?", [account]).fetchone()
            if row[0] is None:
                db.execute(
                    "UPDATE accounts SET library_id = ?, wrapped_key = ? WHERE id = ?",
                    [library_id, wrapped_key, account],
                )
                return BindOutcome.NEW
            if row[0] == library_id:
                return BindOutcome.SAME
            raise AlreadyBound(row[0])

    def purge(self, account: str) -> PurgeResult:
        with self._lock:
            with self._tx() as db:
                change_sets = db.execute("SELECT count(*) FROM changesets WHERE account = ?", [account]).fetchone()[0]
                chunks = db.execute("SELECT count(*) FROM chunks WHERE account = ?", [account]).fetchone()[0]
                used, epoch = db.execute("SELECT used_bytes, epoch FROM accounts WHERE id = ?", [account]).fetchone()
                for table in ("changesets", "chunks", "heads"):
                    db.execute(f"DELETE FROM {table} WHERE account = ?", [account])
                self._forget_keys(db, account)
                db.execute(
                    "UPDATE accounts SET library_id = NULL, wrapped_key = NULL, used_bytes = 0, epoch = epoch + 1, "
                    f"{recovery.FORGET} WHERE id = ?",
                    [account],
                )
                db.execute("INSERT OR IGNORE INTO doomed (account, epoch) VALUES (?, ?)", [account, epoch])
            self._discard_folder(account, epoch)
        return PurgeResult(change_sets, chunks, used)

    # --- the rest ------------------------------------------------------------------------------

    def ping(self) -> None:
        with self._lock:
            self.db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._reaper.shutdown(wait=True)
            self.db.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
