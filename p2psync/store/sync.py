"""The store's side of sync: seal this device's log into change sets, say what we have, send
what a peer lacks, and check and apply what a peer sends.

The rules live in the engine (engine/changesets.py); this module feeds them the library's state
and writes the results. `sync_libraries` runs a whole two-way sync between two open libraries in
one process: it is what the network layer does, minus the network.

A sync between peers is:
  1. each side seals its unsealed log entries (seal);
  2. each side sends its version vector (version_vector);
  3. each side streams the change sets the other lacks, oldest first (changesets_since);
  4. each side checks and applies what arrives, one transaction per change set (receive).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from p2psync.crypto.identity import verify
from p2psync.engine import changesets as cs_engine
from p2psync.engine import clock, ops
from p2psync.engine.canonical import dumps, loads
from p2psync.engine.delivery import Delivery
from p2psync.engine.vectors import VersionVector
from p2psync.errors import InvalidValue, LibraryCorrupt
from p2psync.model.devices import library_id_for
from p2psync.store import logtext, search_build
from p2psync.store.apply import apply_entry, insert_new_refs, is_plain_new_ref, new_ref_row
from p2psync.store.db import (
    begin_immediate,
    bulk_journal,
    commit,
    disk_full,
    is_disk_full,
    rollback,
    write_transaction,
)
from p2psync.store.library import Library
from p2psync.store.prepare import PreparedChangeSet, Preparer
from p2psync.store.read_ahead import ReadAhead


def version_vector(library: Library) -> VersionVector:
    """device -> last sequence number of that device's change sets we hold."""
    return VersionVector(
        {a: int(s) for a, s in library.db.execute("SELECT author, max(last) FROM changesets GROUP BY author")}
    )


def unsealed_count(library: Library) -> int:
    """This device's log entries not yet in a change set (pending local changes)."""
    sealed = version_vector(library).get(library.device_id, 0)
    row = library.db.execute(
        "SELECT count(*) FROM changelog WHERE device = ? AND seq > ?", [library.device_id, sealed]
    ).fetchone()
    return int(row[0])


def seal(library: Library) -> int:
    """Cut this device's unsealed entries into signed change sets; return how many were made.

    The body is put together from the operations' canonical texts as the log stores them, read
    in one pass, so sealing a large import costs a signature per change set, not a re-encoding
    of every entry.
    """
    library.record_local_edits()  # everything this device changed goes out, files edited in place too
    identity = library.identity()
    made = 0
    with write_transaction(library.db):
        vv = version_vector(library)
        head = _chain_heads(library).get(library.device_id)
        first = vv.get(library.device_id, 0) + 1
        # Read once, as the pieces are cut: one piece in memory at a time.
        rows = library.db.execute(_LOG_ENTRIES, [library.device_id, first, cs_engine.MAX_TS])
        for piece in cs_engine.split_stream(rows, lambda row: len(row[2] or b"")):
            last = piece[-1][0]
            items = _items(library.device_id, first, last, piece)
            body = cs_engine.assemble_body(library.library_id, library.device_id, head, vv, items)
            if len(body) > cs_engine.MAX_BYTES - 200:  # cannot happen within the op and deps limits
                raise InvalidValue("A change is too large to sync; shorten the longest field and try again.")
            digest = hashlib.sha256(body).digest()  # hashed once: the signature's input and the id
            signature = identity.sign(cs_engine.digest_input(library.library_id, digest))
            cs_id = digest.hex()
            deps = {d: s for d, s in vv.items() if d != library.device_id and s > 0}
            _store_header(library, library.device_id, first, last, cs_id, head, deps, signature)
            head = cs_id
            first = last + 1
            made += 1
    return made


# A device's log entries [first, last] as (seq, ts, canonical op bytes), in order.
_LOG_ENTRIES = (
    f"SELECT c.seq, c.ts, CAST({logtext.OP_TEXT} AS BLOB) FROM {logtext.LOG_ROWS} "
    "WHERE c.device = ? AND c.seq BETWEEN ? AND ? ORDER BY c.seq"
)


def _entry_items(library: Library, author: str, first: int, last: int) -> list[bytes]:
    """The entries [seq, ts, op] of a change set as canonical bytes, from the log's texts."""
    return _items(author, first, last, library.db.execute(_LOG_ENTRIES, [author, first, last]).fetchall())


def _items(author: str, first: int, last: int, rows: list[Any]) -> list[bytes]:
    """Entry items from _LOG_ENTRIES rows that must be exactly seq first..last (sequence numbers
    are unique per device, so the count says none is missing)."""
    if len(rows) != last - first + 1 or any(op is None for _, _, op in rows):
        raise LibraryCorrupt(f"The change log of device {author[:7]} is missing entries; restore from a backup.")
    return [cs_engine.entry_item(seq, ts, op) for seq, ts, op in rows]


def _store_header(
    library: Library,
    author: str,
    first: int,
    last: int,
    cs_id: str,
    prev: str | None,
    deps: dict[str, int],
    signature: bytes,
) -> int:
    """Record a change set whose entries are already in the log (changelog.cs is no longer kept:
    which change set holds an entry follows from the headers' ranges)."""
    cursor = library.db.execute(
        "INSERT INTO changesets (author, first, last, id, prev, deps, sig) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [author, first, last, cs_id, prev, dumps(deps), base64.b64encode(signature).decode("ascii")],
    )
    return int(cursor.lastrowid or 0)


def _chain_heads(library: Library) -> dict[str, str]:
    return {
        a: i
        for a, i in library.db.execute(
            "SELECT c.author, c.id FROM changesets c JOIN "
            "(SELECT author, max(last) AS last FROM changesets GROUP BY author) h "
            "ON h.author = c.author AND h.last = c.last"
        )
    }


def changesets_since(library: Library, theirs: dict[str, int]) -> Iterator[bytes]:
    """The change sets a peer with version vector `theirs` lacks, in an order they can apply,
    as the exact bytes their authors signed (assembled from the log)."""
    # Only the headers the peer lacks (changesets_by_author): reading all took 2-10 ms at 1M refs.
    headers: list[Any] = []
    for (author,) in library.db.execute("SELECT DISTINCT author FROM changesets").fetchall():
        headers += library.db.execute(
            "SELECT num, author, first, last, prev, deps, sig FROM changesets WHERE author = ? AND last > ?",
            [author, theirs.get(author, 0)],
        ).fetchall()
    headers.sort()  # by num: the order they were stored in, which a peer can apply
    for _num, author, first, last, prev, deps, sig in headers:
        items = _entry_items(library, author, first, last)
        body = cs_engine.assemble_body(library.library_id, author, prev, loads(deps), items)
        yield cs_engine.wire_bytes(body, base64.b64decode(sig))


def count_missing(library: Library, theirs: dict[str, int]) -> int:
    return sum(1 for _ in changesets_since(library, theirs))


@dataclass
class ReceiveReport:
    applied: int = 0  # change sets applied
    entries: int = 0  # log entries they carried
    duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)  # {"reason", "message"}
    waiting: int = 0  # still waiting for what they depend on

    def add(self, part: ReceiveReport) -> None:
        """Count in what one more receive() of the same sync did (a sync receives in batches)."""
        self.applied += part.applied
        self.entries += part.entries
        self.duplicates += part.duplicates
        self.rejected += part.rejected
        self.waiting = part.waiting  # (what still waits after the latest batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "entries": self.entries,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "waiting": self.waiting,
        }


# A bulk receive commits every COMMIT_ENTRIES entries or COMMIT_SECONDS, whichever comes first:
# few commits (each rewrites the pages of every index it touched, and fsyncs), yet the write lock
# is never held long enough to keep a local edit waiting for more than a moment.
COMMIT_ENTRIES = 20_000
COMMIT_SECONDS = 0.5


class _Batch:
    """Change sets applied inside one transaction, each in its own savepoint, so that a rejected
    one is rolled back alone: every change set is still applied whole or not at all. A received
    change set lost to a crash before the commit is simply fetched again by the next sync."""

    def __init__(
        self, library: Library, meanwhile: ReadAhead | None = None, bulk: Callable[[], bool] | None = None
    ) -> None:
        self.db = library.db
        self.bulk = bulk  # db.bulk_journal's switch, for a receive big enough to commit in batches
        self.deadline: float | None = None
        self.started = 0.0
        self.entries = 0
        # Work that needs no database, done on another thread while a COMMIT runs: the commit
        # (writing and syncing the WAL, checkpointing) releases the GIL for its whole length.
        self.meanwhile = meanwhile

    def begin(self) -> None:
        if self.deadline is None:
            self.deadline = begin_immediate(self.db)
            self.started = time.monotonic()
            self.entries = 0

    def done(self, entries: int) -> None:
        self.entries += entries
        if self.entries >= COMMIT_ENTRIES or time.monotonic() - self.started >= COMMIT_SECONDS:
            self.commit()
            if self.bulk is not None:  # a big receive: the rest is written faster with a rollback journal
                self.bulk()

    def commit(self) -> None:
        if self.deadline is not None:
            deadline, self.deadline = self.deadline, None
            if self.meanwhile is None:
                commit(self.db, deadline)
                return
            self.meanwhile.prefetch()
            stop = threading.Event()
            helper = threading.Thread(target=self.meanwhile.parse_ahead, args=(stop,), daemon=True)
            helper.start()
            try:
                commit(self.db, deadline)
            finally:
                stop.set()  # the helper stops after the item in hand: a few ms
                helper.join()

    def rollback(self) -> None:
        if self.deadline is not None:
            self.deadline = None
            rollback(self.db)
            search_build.drop(self.db)  # it may hold rows undone here


# How an attachment operation's kind stands in a change set's canonical bytes.
ATTACHMENT_PUT = f'"{ops.ATTACHMENT_PUT}"'.encode()


def receive(
    library: Library,
    wires: Iterable[bytes],
    peer: str = "peer",
    parallel: bool = True,
    preparer: Preparer | None = None,
) -> ReceiveReport:
    """Check and apply change sets from a peer. Each is applied whole or not at all; a rejected
    one is recorded (for `status`) and the author's later change sets are not applied. One whose
    dependencies have not arrived waits (with every later one of its author) until they do.

    New references are written without their search-index rows (Library.catch_up_search does
    those afterwards); past BUILD_AFTER_BYTES into a library with no reference yet, a child
    process builds them meanwhile (store/search_build.py). Callers that read wires from a network
    should pass what has arrived, not a generator that waits on the network, since a batch holds
    the library's write lock.
    parallel: past PARALLEL_AFTER_BYTES, parse in a second process (store/prepare.py); callers
    that pass one small batch after another say False, since each would start its own, and may
    pass one `preparer` of their own that parses every batch (they close it).
    """
    # A file edited in place here is recorded before a peer's version of it can land. (An edit
    # replaces only the version it was made from, so one recorded later is a conflict all the
    # same; recording first keeps the order of events plain.) A batch that names no attachment
    # needs no look at every file, which costs ~12 us a file on each receive.
    if not isinstance(wires, list) or any(ATTACHMENT_PUT in wire for wire in wires):
        library.record_local_edits()
    report = ReceiveReport()
    wires = _with_search_build(library, wires)
    incoming = ReadAhead(wires, library.library_id, PARALLEL_AFTER_BYTES if parallel else None, preparer)
    try:
        with bulk_journal(library.db) as use_rollback_journal:
            batch = _Batch(library, incoming, use_rollback_journal)
            _receive_all(library, incoming, batch, report, peer)
    finally:
        incoming.close()
    return report


# Past this much in one receive, a child process parses ahead (it takes ~0.2 s to start).
PARALLEL_AFTER_BYTES = 8 * 1024 * 1024


def _with_search_build(library: Library, wires: Iterable[bytes]) -> Iterable[bytes]:
    """The wires, starting the search index's build beside the receive (store/search_build.py)
    once BUILD_AFTER_BYTES of them have come into a library that held no reference when this
    receive began. (A network receive comes in batches: the first one starts it, the later ones
    find it running.)"""
    db = library.db
    if search_build.running(db) or db.execute("SELECT 1 FROM refs LIMIT 1").fetchone() is not None:
        return wires
    if isinstance(wires, list):
        if sum(len(wire) for wire in wires) >= search_build.BUILD_AFTER_BYTES:
            search_build.start(db, library.path)
        return wires

    def counted() -> Iterator[bytes]:
        taken = 0
        for wire in wires:
            taken += len(wire)
            if taken >= search_build.BUILD_AFTER_BYTES and not search_build.running(db):
                search_build.start(db, library.path)
            yield wire

    return counted()


def _receive_all(library: Library, incoming: ReadAhead, batch: _Batch, report: ReceiveReport, peer: str) -> None:
    delivery = Delivery()  # the engine decides the order; this loop adds savepoints and SQL
    try:
        with _gc_paused():
            for parsed in incoming:
                if isinstance(parsed, cs_engine.ChangeSetRejected):
                    _reject(library, report, peer, parsed)
                elif delivery.offer(parsed):
                    _drain(library, batch, delivery, report, peer)
        batch.commit()
    except BaseException as exc:
        batch.rollback()
        if is_disk_full(exc, library.path):  # what was committed before stays: each change set is whole or absent
            raise disk_full(library.db) from None
        raise
    report.waiting = delivery.waiting


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk receive: decoding allocates millions of
    small containers (none in cycles), and the collections they trigger cost a third of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _drain(library: Library, batch: _Batch, delivery: Delivery, report: ReceiveReport, peer: str) -> None:
    """Check and apply every change set the delivery order says may be ready, each in a savepoint
    so that a rejected one is rolled back alone."""
    db = library.db
    while (cs := delivery.next()) is not None:
        batch.begin()
        db.execute("SAVEPOINT change_set")
        try:
            outcome = cs_engine.check(cs, _receiver(library), verify)
            if outcome == cs_engine.Outcome.NEW:
                _apply(library, cs)
        except cs_engine.ChangeSetRejected as exc:
            db.execute("ROLLBACK TO change_set")
            db.execute("RELEASE change_set")
            search_build.drop(db)  # it may hold rows undone here
            delivery.reject(cs)
            _reject(library, report, peer, exc)
            continue
        db.execute("RELEASE change_set")
        delivery.settle(cs, outcome)
        if outcome == cs_engine.Outcome.DUPLICATE:
            report.duplicates += 1
        elif outcome == cs_engine.Outcome.NEW:
            report.applied += 1
            report.entries += len(cs.entries)
            batch.done(len(cs.entries))


def _apply(library: Library, cs: cs_engine.ChangeSet) -> None:
    db = library.db
    absent = _absent_refs(library, {op["ref"] for _, _, op in cs.entries if op["op"] == "ref.put"})
    plan = _plan(cs, absent)
    entries = cs.entries
    if isinstance(cs, PreparedChangeSet) and any(plan[i] is None for i in cs.new_refs):
        # A stub whose reference is not new after all goes through apply_entry whole.
        entries = [
            (s, t, cs.whole_op(i) if i in cs.new_refs and plan[i] is None else op)
            for i, (s, t, op) in enumerate(entries)
        ]
    base = int(db.execute("SELECT coalesce(max(num), 0) + 1 FROM changelog").fetchone()[0])
    db.conn.executemany(
        "INSERT INTO changelog (num, device, seq, ts, op, ref) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (base + i, cs.author, seq, ts, *(("", op["ref"]) if plan[i] else (dumps(op), None)))
            for i, (seq, ts, op) in enumerate(entries)
        ],
    )
    _store_header(library, cs.author, cs.first, cs.last, cs.id, cs.prev, dict(cs.deps), cs.signature)
    # References created from nothing (most of a first sync) are written together; any other
    # entry first flushes them, so entries still apply strictly in order.
    prepared = cs.new_refs if isinstance(cs, PreparedChangeSet) else {}
    new_rows: list[list[Any]] = []
    for i, (seq, ts, op) in enumerate(entries):
        if plan[i] is not None:
            absent.discard(op["ref"])
            data_text = plan[i] or None
            origin = None if data_text is None else base + i
            if i in prepared:
                new_rows.append(cs.row(i, plan[i], origin))  # type: ignore[attr-defined]
            else:
                new_rows.append(new_ref_row(cs.author, seq, ts, op, data_text, origin))
            continue
        if new_rows:
            insert_new_refs(db, new_rows)
            new_rows = []
        apply_entry(db, cs.author, seq, ts, op, absent, defer_index=True)
    if new_rows:
        insert_new_refs(db, new_rows)
    library.advance_clock(max(ts for _, ts, _ in cs.entries))


def _plan(cs: cs_engine.ChangeSet, absent: set[str]) -> list[bytes | None]:
    """For each entry: None if it goes through apply_entry; otherwise it creates a reference from
    nothing (written by new_ref_row), and the value is canonical(op["fields"]) (UTF-8), kept in that
    row alone (store/logtext.py: the entry's text is then HEAD + that + TAIL), or b"" when a field
    is cleared to null (the row's data leaves it out, so the log keeps the entry whole). Only the
    first ref.put or ref.delete of an absent reference finds it absent, as in _apply's walk.
    A prepared change set's stubs (store/prepare.py) passed every test but absence already."""
    fresh = set(absent)
    plan: list[bytes | None] = []
    texts = logtext.FieldsTexts(cs.body_bytes)
    prepared = cs.new_refs if isinstance(cs, PreparedChangeSet) else {}
    for index, (seq, ts, op) in enumerate(cs.entries):
        step = None
        if index in prepared:
            if op["ref"] in fresh:
                step = cs.fields_text(index)  # type: ignore[attr-defined]
        elif is_plain_new_ref(op, fresh):
            step = b"" if None in op["fields"].values() else texts.find(seq, ts, op["ref"])
        if op["op"] in ("ref.put", "ref.delete"):
            fresh.discard(op["ref"])
        plan.append(step)
    return plan


def _absent_refs(library: Library, ids: set[str]) -> set[str]:
    """Which of these reference ids the library does not hold yet (one query per 500)."""
    found: set[str] = set()
    pending = sorted(ids)
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(r for (r,) in library.db.execute(f"SELECT id FROM refs WHERE id IN ({marks})", chunk))
    return ids - found


def _receiver(library: Library) -> cs_engine.Receiver:
    db = library.db
    keys: dict[str, bytes] = {}
    revoked: dict[str, int] = {}
    for device, key in db.execute("SELECT id, public_key FROM devices"):
        keys[device] = base64.b64decode(key)
    for device, upto in db.execute("SELECT device, upto FROM revocations"):
        revoked[device] = int(upto)

    def known_id(author: str, first: int) -> str | None:
        row = db.execute("SELECT id FROM changesets WHERE author = ? AND first = ?", [author, first]).fetchone()
        return str(row[0]) if row else None

    return cs_engine.Receiver(
        version_vector=version_vector(library),
        chain_heads=_chain_heads(library),
        member_keys=keys,
        revoked_upto=revoked,
        known_id=known_id,
        founder_check=lambda key: library_id_for(key) == library.library_id,
    )


def _reject(library: Library, report: ReceiveReport, peer: str, exc: cs_engine.ChangeSetRejected) -> None:
    report.rejected.append({"reason": exc.reason, "message": exc.message})
    record = (
        "INSERT INTO sync_problems (peer, at, reason, message) VALUES (?, ?, ?, ?)",
        [peer, clock.now_ms(), exc.reason, exc.message],
    )
    if library.db.conn.in_transaction:  # inside a receive batch: commits with it
        library.db.execute(*record)
    else:
        with write_transaction(library.db):
            library.db.execute(*record)


def recent_problems(library: Library, limit: int = 20) -> list[dict[str, Any]]:
    rows = library.db.execute(
        "SELECT peer, at, reason, message FROM sync_problems ORDER BY num DESC LIMIT ?", [limit]
    ).fetchall()
    return [{"peer": p, "at": a, "reason": r, "message": m} for p, a, r, m in rows]


@dataclass
class SyncReport:
    sent_to_b: ReceiveReport
    sent_to_a: ReceiveReport


def sync_libraries(a: Library, b: Library) -> SyncReport:
    """A whole two-way sync of two libraries in one process (what the network layer wraps)."""
    seal(a)
    seal(b)
    to_b = receive(b, changesets_since(a, version_vector(b)), peer=a.device_id)
    to_a = receive(a, changesets_since(b, version_vector(a)), peer=b.device_id)
    return SyncReport(to_b, to_a)
