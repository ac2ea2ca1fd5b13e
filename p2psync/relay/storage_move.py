"""`relay migrate`: a SQLite relay's whole store moved into PostgreSQL in one verified pass.

Everything moves as it is: accounts (login hashes, wrapped keys, counters, blob epochs), tokens
(so that devices go on without logging in again), login and sign-up attempts (the limits go on
counting), heads, change sets, chunks, devices, revocations, key epochs and their copies, and
every blob file. The source folder is locked for the whole pass (a relay still running on it is
refused: its writes after the copy would be lost) and brought to this version's schema first.

The target is written in ONE transaction, under the migrations' advisory lock and with its
tables locked against writers: a failure anywhere (a blob file missing or not matching its
SHA-256, a count that differs) leaves the database as it was. Before the commit the copy is
checked inside the same transaction: each table's row count against the source's, and each
blob's SHA-256 as PostgreSQL computes it from the stored bytes against its name (which the file
had to match when read). A target that holds any account is refused unless `replace` is given,
which empties it in the same transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.errors import Conflict, P2PSyncError
from p2psync.relay import storage_migrations, storage_pg_migrations
from p2psync.relay.storage import SqliteStorage, StorageLocked
from p2psync.relay.storage_pg import PostgresStorage

# (table, its columns) in an order that satisfies the foreign keys; the same names on both sides.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("accounts", ("id", "email", "salt", "login_hash", "library_id", "wrapped_key", "used_bytes", "next_num",
                  "epoch", "created", "kdf", "key_epoch", "wrapped_epoch", "recovery_salt", "recovery_verifier",
                  "recovery_kdf", "recovery_wrapped", "recovery_epoch")),
    ("tokens", ("hash", "account", "expires", "device")),
    ("login_attempts", ("email", "client", "at")),
    ("signup_attempts", ("client", "at")),
    ("heads", ("account", "device", "last")),
    ("changesets", ("account", "num", "device", "first", "last", "size", "blob", "key_epoch")),
    ("chunks", ("account", "id", "size", "blob", "key_epoch")),
    ("devices", ("account", "device", "public_key", "agreement_key", "proof_time", "proof_signature",
                 "registered")),
    ("revocations", ("account", "device", "by_device", "upto", "signature", "at", "covered")),
    ("key_epochs", ("account", "epoch", "by_device", "key_check", "previous", "signature", "created")),
    ("key_wraps", ("account", "epoch", "device", "sealed")),
)  # fmt: skip
EVERY_TABLE = [name for name, _ in TABLES] + ["blobs"]


class MoveRefused(Conflict):
    pass


@dataclass
class MoveProgress:
    """What the pass has done so far (given to the progress callback now and then)."""

    step: str
    rows: int = 0
    blobs: int = 0
    blobs_total: int = 0
    bytes: int = 0


@dataclass
class MoveReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)  # per table, as copied and verified
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    replaced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "rows": self.rows,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
            "replaced": self.replaced,
            "verified": True,
        }


def move_to_postgres(
    data_dir: Path,
    url: str,
    replace: bool = False,
    progress: Callable[[MoveProgress], None] | None = None,
) -> MoveReport:
    """Copy the SQLite relay store in data_dir into the PostgreSQL database at url, verified."""
    started = time.monotonic()
    say = progress or (lambda _p: None)
    try:
        source = SqliteStorage(data_dir)
    except StorageLocked:
        raise MoveRefused(
            f"A relay is running on {data_dir}; stop it first (relay migrate needs the store still, "
            "or writes after the copy would be lost)."
        ) from None
    try:
        if storage_migrations.LATEST != storage_pg_migrations.LATEST:  # a release adds both or neither
            raise P2PSyncError("This p2psync's SQLite and PostgreSQL schemas differ; it cannot move a store.")
        target = PostgresStorage(url, pool_size=1)
        try:
            report = MoveReport(str(data_dir), target.where, replaced=replace)
            with target.pool.connection() as conn, conn.transaction():
                _copy(source, conn, report, replace, say)
        finally:
            target.close()
    finally:
        source.close()
    report.seconds = time.monotonic() - started
    return report


def _copy(
    source: SqliteStorage, conn: Any, report: MoveReport, replace: bool, say: Callable[[MoveProgress], None]
) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [storage_pg_migrations.LOCK])
    conn.execute(f"LOCK TABLE {', '.join(EVERY_TABLE)} IN EXCLUSIVE MODE")  # relays on it wait, never interleave
    (held,) = conn.execute("SELECT count(*) FROM accounts").fetchone()
    if held and not replace:
        raise MoveRefused(
            f"The database {report.target} holds {held} accounts already; give --replace to empty it first "
            "(everything in it is then deleted), or another database."
        )
    if replace:
        conn.execute(f"TRUNCATE {', '.join(EVERY_TABLE)}")
    db = source.db
    db.execute("BEGIN")  # one read snapshot of the source (it is locked anyway)
    try:
        for table, columns in TABLES:
            names = ", ".join(columns)
            count = 0
            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in db.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
                    count += 1
            report.rows[table] = count
            say(MoveProgress(f"copied {table}", rows=count))
        _copy_blobs(source, conn, report, say)
        _verify(source, conn, report)
    finally:
        db.execute("ROLLBACK")
    say(MoveProgress("verified", rows=sum(report.rows.values()), blobs=report.blobs, bytes=report.bytes))


def _blob_refs(source: SqliteStorage) -> list[tuple[str, str]]:
    """(account, name) of every blob a change set or chunk names, once each."""
    return source.db.execute("SELECT account, blob FROM changesets UNION SELECT account, blob FROM chunks").fetchall()


def _copy_blobs(source: SqliteStorage, conn: Any, report: MoveReport, say: Callable[[MoveProgress], None]) -> None:
    refs = _blob_refs(source)
    last_said = time.monotonic()
    with conn.cursor().copy("COPY blobs (account, name, data) FROM STDIN") as copy:
        for n, (account, name) in enumerate(refs, 1):
            data = _read_verified(source, account, name)
            copy.write_row((account, name, data))
            report.blobs += 1
            report.bytes += len(data)
            if time.monotonic() - last_said >= 1.0 or n == len(refs):
                say(MoveProgress("copying blobs", blobs=n, blobs_total=len(refs), bytes=report.bytes))
                last_said = time.monotonic()
    report.rows["blobs"] = report.blobs


def _read_verified(source: SqliteStorage, account: str, name: str) -> bytes:
    path = source.blobs / account / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MoveRefused(f"The blob file {path} is missing; nothing was moved.") from None
    if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
        raise MoveRefused(f"The blob file {path} does not match its SHA-256 (damaged); nothing was moved.")
    return data


def _verify(source: SqliteStorage, conn: Any, report: MoveReport) -> None:
    """Inside the copy's transaction: every count as the source's, every blob's bytes as its name."""
    for table, _ in TABLES:
        (theirs,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        (ours,) = source.db.execute(f"SELECT count(*) FROM {table}").fetchone()
        if theirs != ours or theirs != report.rows[table]:
            raise P2PSyncError(f"The copy of {table} holds {theirs} rows, the source {ours}; nothing was moved.")
    bad = conn.execute(
        "SELECT count(*) FROM blobs WHERE encode(sha256(data), 'hex') <> split_part(name, '/', 3)"
    ).fetchone()[0]
    (stored,) = conn.execute("SELECT count(*) FROM blobs").fetchone()
    unnamed = conn.execute(
        "SELECT (SELECT count(*) FROM changesets c WHERE NOT EXISTS "
        "(SELECT 1 FROM blobs b WHERE b.account = c.account AND b.name = c.blob)) + "
        "(SELECT count(*) FROM chunks k WHERE NOT EXISTS "
        "(SELECT 1 FROM blobs b WHERE b.account = k.account AND b.name = k.blob))"
    ).fetchone()[0]
    if bad or stored != report.blobs or unnamed:
        raise P2PSyncError(
            f"The copied blobs do not check out ({bad} differ from their SHA-256, {stored} of {report.blobs} "
            f"stored, {unnamed} rows without their blob); nothing was moved."
        )
