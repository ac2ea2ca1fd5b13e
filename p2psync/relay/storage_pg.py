"""RelayStorage on PostgreSQL (storage.py's Protocol): for a relay that outgrows one machine, run
as several relay processes on one database (`relay serve --database postgresql://...`).

The interface stays synchronous, like SqliteStorage's, so both backends are one Protocol and
one contract suite; the server runs the calls on `workers` threads (one per pooled connection)
instead of SQLite's single thread. Every call is one transaction on a connection of a psycopg
pool. Every rule holds across processes because it is enforced in the database, never in
process memory: a write to an account first locks the account's row (SELECT ... FOR UPDATE), so
pushes, chunk puts, purges, binds, revocations and key changes of one account run one after
another in whichever process, each seeing what the one before committed; unique keys refuse a
second account per address or a second chunk per id; login and sign-up limits count rows under a
transaction-scoped advisory lock per e-mail and per client address. A transaction that loses a
deadlock or a serialization check is retried (a few times, then the error goes up). Reads that
take several statements (a pull, the keys) run in one REPEATABLE READ snapshot.

Blobs live in the same database (blobs.py, `PgBlobs`), written in the same transaction as the
rows that name them. Migrations: storage_pg_migrations.py, run at start under an advisory lock.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from p2psync.errors import NetworkError
from p2psync.relay import storage_pg_migrations as migrations
from p2psync.relay import storage_recovery as recovery
from p2psync.relay.outcomes import BindOutcome
from p2psync.relay.passwords import FAILED_LOGIN_WINDOW, MAX_FAILED_LOGINS, retry_after
from p2psync.relay.storage import (
    CLAIM_TABLES,
    TOKEN_GRACE,
    AccountInfo,
    AlreadyBound,
    Claim,
    EmailTaken,
    LoginRecord,
    PurgeResult,
    login_limit_wait,
)
from p2psync.relay.storage_blobs import BlobStore, PgBlobs
from p2psync.relay.storage_pg_data import PgChangeSets
from p2psync.relay.storage_pg_keys import PgKeys
from p2psync.relay.storage_pg_recovery import PgRecovery

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

POOL_SIZE = 8  # connections (and storage threads) per relay process
RETRIES = 5  # tries of a transaction that lost a deadlock or a serialization check
PING_SECONDS = 5.0  # healthz waits this long for a ping (relay/operations.py HEALTH_SECONDS)
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


def describe(url: str) -> str:
    """The database a URL names, for messages: user@host:port/db, never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database given (the URL cannot be read)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', 'localhost')}{port}/{parts.get('dbname', '')}"


def is_database_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


class PostgresStorage(PgChangeSets, PgKeys, PgRecovery):
    """RelayStorage on a PostgreSQL database given by a libpq URL (postgresql://USER@HOST:PORT/DB;
    a password comes from the URL, PGPASSWORD or ~/.pgpass)."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE, blobs: BlobStore | None = None) -> None:
        self.where = describe(url)
        self.workers = pool_size
        self.blobs: BlobStore = blobs if blobs is not None else PgBlobs()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                migrations.upgrade(conn, self.where)
        except psycopg.OperationalError as exc:
            raise NetworkError(f"Cannot use the database {self.where}: {_first_line(exc)}") from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            # A connection the server dropped (a restart, an idle timeout) is replaced when taken,
            # instead of failing the one request that drew it (one round trip each time).
            check=ConnectionPool.check_connection,
            timeout=30.0,
            name="p2psync-relay",
            open=False,
        )
        self.pool.open()
        try:
            self.pool.wait(timeout=10.0)
        except PoolTimeout:
            self.pool.close()
            raise NetworkError(f"Cannot connect to the database {self.where}.") from None

    # --- transactions --------------------------------------------------------------------------

    def _run(self, work: Callable[[Cursor], T], snapshot: bool = False) -> T:
        """work(cursor) in one transaction, retried if it lost a deadlock or a serialization
        check; `snapshot`: a REPEATABLE READ transaction (several reads that must agree)."""
        for attempt in range(RETRIES):
            try:
                with self.pool.connection() as conn, conn.transaction():
                    if snapshot:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    with conn.cursor() as cur:
                        return work(cur)
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    @staticmethod
    def _lock_account(cur: Cursor, account: str, columns: str) -> tuple[Any, ...]:
        """The account's row, locked until the transaction ends (every write of an account takes it)."""
        row = cur.execute(f"SELECT {columns} FROM accounts WHERE id = %s FOR UPDATE", [account]).fetchone()
        if row is None:
            raise KeyError(account)
        return tuple(row)

    @staticmethod
    def _lock_keys(cur: Cursor, *keys: str) -> None:
        """Transaction-scoped advisory locks on names (an e-mail, a client address), in one order."""
        for key in sorted(set(keys)):
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_number(key)])

    # --- accounts and tokens -------------------------------------------------------------------

    def create_account(self, email: str, salt: bytes, login_hash: bytes, now: float, kdf: str | None = None) -> str:
        account = secrets.token_hex(16)

        def work(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO accounts (id, email, salt, login_hash, created, kdf) VALUES (%s, %s, %s, %s, %s, %s)",
                [account, email, salt, login_hash, now, kdf],
            )

        try:
            self._run(work)
        except pg_errors.UniqueViolation:
            raise EmailTaken("An account with this e-mail address exists already; log in instead.") from None
        return account

    def login_record(self, email: str) -> LoginRecord | None:
        row = self._run(
            lambda cur: cur.execute(
                "SELECT id, salt, login_hash, kdf FROM accounts WHERE email = %s", [email]
            ).fetchone()
        )
        return LoginRecord(row[0], bytes(row[1]), bytes(row[2]), row[3]) if row else None

    def claim_signup(self, client: str, now: float, limit: int, window: float) -> Claim:
        def work(cur: Cursor) -> Claim:
            self._lock_keys(cur, "signup client " + client)
            cur.execute("DELETE FROM signup_attempts WHERE at <= %s", [now - window])
            rows = cur.execute("SELECT at FROM signup_attempts WHERE client = %s", [client]).fetchall()
            wait = retry_after([r[0] for r in rows], now, limit, window)
            if wait is not None:
                return Claim("signup", wait, None)
            made = _scalar(
                cur.execute("INSERT INTO signup_attempts (client, at) VALUES (%s, %s) RETURNING id", [client, now])
            )
            return Claim("signup", None, made)

        return self._run(work)

    def set_login(self, account: str, salt: bytes, login_hash: bytes, wrapped_key: bytes | None, kdf: str) -> None:
        self._run(
            lambda cur: cur.execute(
                "UPDATE accounts SET salt = %s, login_hash = %s, kdf = %s, "
                "wrapped_key = CASE WHEN library_id IS NULL THEN NULL ELSE %s::bytea END WHERE id = %s",
                [salt, login_hash, kdf, wrapped_key, account],
            )
        )

    def claim_login(
        self,
        email: str,
        client: str,
        now: float,
        limit: int = MAX_FAILED_LOGINS,
        window: float = FAILED_LOGIN_WINDOW,
    ) -> Claim:
        def work(cur: Cursor) -> Claim:
            # Every claim of this e-mail or this client, in any process, waits for this one.
            self._lock_keys(cur, "login email " + email, "login client " + client)
            by_email = cur.execute(
                "SELECT at FROM login_attempts WHERE email = %s AND at > %s", [email, now - window]
            ).fetchall()
            by_client = cur.execute(
                "SELECT at FROM login_attempts WHERE client = %s AND at > %s", [client, now - window]
            ).fetchall()
            wait = login_limit_wait(by_email, by_client, now, limit, window)
            if wait is not None:
                return Claim("login", wait, None)
            made = _scalar(
                cur.execute(
                    "INSERT INTO login_attempts (email, client, at) VALUES (%s, %s, %s) RETURNING id",
                    [email, client, now],
                )
            )
            return Claim("login", None, made)

        claim = self._run(work)
        if claim.attempt is not None and claim.attempt % 64 == 0:  # now and then, not under the locks
            self._run(lambda cur: cur.execute("DELETE FROM login_attempts WHERE at <= %s", [now - window]))
        return claim

    def release_claim(self, claim: Claim) -> None:
        if claim.attempt is not None:
            table = CLAIM_TABLES[claim.kind]
            self._run(lambda cur: cur.execute(f"DELETE FROM {table} WHERE id = %s", [claim.attempt]))

    def add_token(self, account: str, token_hash: bytes, expires: float, now: float, device: str | None = None) -> None:
        def work(cur: Cursor) -> None:
            cur.execute("DELETE FROM tokens WHERE expires < %s", [now - TOKEN_GRACE])
            cur.execute(
                "INSERT INTO tokens (hash, account, expires, device) VALUES (%s, %s, %s, %s)",
                [token_hash, account, expires, device],
            )

        self._run(work)

    def delete_token(self, token_hash: bytes) -> None:
        self._run(lambda cur: cur.execute("DELETE FROM tokens WHERE hash = %s", [token_hash]))

    def account_info(self, account: str) -> AccountInfo:
        def work(cur: Cursor) -> AccountInfo:
            row = cur.execute(
                "SELECT email, library_id, wrapped_key, used_bytes, key_epoch, wrapped_epoch FROM accounts "
                "WHERE id = %s",
                [account],
            ).fetchone()
            if row is None:
                raise KeyError(account)
            change_sets, chunks = _counts(cur, account)
            wrapped = bytes(row[2]) if row[2] is not None else None
            return AccountInfo(account, row[0], row[1], wrapped, row[3], change_sets, chunks, row[4], row[5])

        return self._run(work, snapshot=True)

    def change_password(
        self,
        account: str,
        salt: bytes,
        login_hash: bytes,
        wrapped_key: bytes | None,
        keep_token: bytes,
        kdf: str | None = None,
    ) -> None:
        def work(cur: Cursor) -> None:
            self._lock_account(cur, account, "id")
            # An unbound account has no wrapped key to replace: it stays null (relay.md §3, /account).
            cur.execute(
                "UPDATE accounts SET salt = %s, login_hash = %s, kdf = %s, "
                "wrapped_key = CASE WHEN library_id IS NULL THEN NULL ELSE %s::bytea END WHERE id = %s",
                [salt, login_hash, kdf, wrapped_key, account],
            )
            cur.execute("DELETE FROM tokens WHERE account = %s AND hash != %s", [account, keep_token])

        self._run(work)

    def bind(self, account: str, library_id: str, wrapped_key: bytes) -> BindOutcome:
        def work(cur: Cursor) -> BindOutcome:
            (bound,) = self._lock_account(cur, account, "library_id")
            if bound is None:
                cur.execute(
                    "UPDATE accounts SET library_id = %s, wrapped_key = %s WHERE id = %s",
                    [library_id, wrapped_key, account],
                )
                return BindOutcome.NEW
            if bound == library_id:
                return BindOutcome.SAME
            raise AlreadyBound(bound)

        return self._run(work)

    def purge(self, account: str) -> PurgeResult:
        def work(cur: Cursor) -> PurgeResult:
            (used,) = self._lock_account(cur, account, "used_bytes")
            change_sets, chunks = _counts(cur, account)
            for table in ("changesets", "chunks", "heads"):
                cur.execute(f"DELETE FROM {table} WHERE account = %s", [account])
            self.blobs.drop_account(cur, account)
            self._forget_keys(cur, account)
            cur.execute(
                "UPDATE accounts SET library_id = NULL, wrapped_key = NULL, used_bytes = 0, epoch = epoch + 1, "
                f"{recovery.FORGET} WHERE id = %s",
                [account],
            )
            return PurgeResult(change_sets, chunks, used)

        return self._run(work)

    # --- the rest ------------------------------------------------------------------------------

    def ping(self) -> None:
        # Waits for a connection as long as healthz waits (not the pool's 30 s): with the database
        # gone, a ping's thread would otherwise hold the relay's stop for half a minute.
        with self.pool.connection(timeout=PING_SECONDS) as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> PostgresStorage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _counts(cur: Cursor, account: str) -> tuple[int, int]:
    """How many change sets and chunks the account holds."""
    row = cur.execute(
        "SELECT (SELECT count(*) FROM changesets WHERE account = %s), (SELECT count(*) FROM chunks WHERE account = %s)",
        [account, account],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _scalar(cur: Cursor) -> Any:
    """The one value a statement returns."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _lock_number(key: str) -> int:
    """A name's advisory lock: 64 bits of its BLAKE2b, signed as PostgreSQL's bigint."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
