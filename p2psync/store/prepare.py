"""Parsing received change sets in a second process, so that a large receive uses both cores.

A first sync spends about a third of its time on work that needs no database: decoding and
checking each change set (engine/changesets.parse) and working out the rows of the references it
creates (store/apply.new_ref_row). The receiving process spends the rest writing SQLite, which
Python's one interpreter lock keeps on one core. For a large receive, sync.receive hands the
wires to a child process (Preparer) that runs exactly that code and answers with what the
receiver needs, while the receiver writes the change sets answered before.

An answer is either the rejection (reason and message, as parse gives them) or the change set,
parsed. In it, an entry that would create a reference from nothing (`candidate`) comes with its
row, and its op is cut down to a stub {"op": "ref.put", "ref": ID}: only the receiver knows
whether the reference is really absent, and when it is not, whole_op() rebuilds the op from the
fields' text in the body. The child's verdicts and rows come from the same functions the
receiver would have called itself; tests hold the two paths equal.

If the child cannot start, dies or stops answering, the receiver parses the rest itself: the
child only ever saves time. Messages are marshal-encoded (plain values only) and framed by an
8-byte length.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import queue
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from p2psync.engine import changesets as cs_engine
from p2psync.engine import ops
from p2psync.engine.canonical import loads
from p2psync.store import child_process, logtext
from p2psync.store.apply import is_plain_new_ref, new_ref_row

# A wire is at most MAX_BYTES, an answer a few times its size. Seen once, in a profiled 1,000,000-
# reference receive: a length beyond memory (MemoryError); the receiver then parses the rest itself.
FRAME_LIMIT = 8 * cs_engine.MAX_BYTES
ANSWER_SECONDS = 60.0  # a child that answers nothing for this long is given up (parsing takes ms)
DATA, ORIGIN = 10, 12  # where new_ref_row puts the data text and the origin

# A candidate: (row from new_ref_row with b"" for its data and None for its origin, start and end
# of canonical(op["fields"]) in the body).
NewRef = tuple[tuple[Any, ...], int, int]


@dataclass(frozen=True)
class PreparedChangeSet(cs_engine.ChangeSet):
    """A change set parsed by the child: entries at the indexes of new_refs hold stub ops."""

    new_refs: dict[int, NewRef] = field(default_factory=dict)

    def fields_text(self, index: int) -> bytes:
        """canonical(op["fields"]) of candidate `index`, cut out of the body."""
        _row, start, end = self.new_refs[index]
        return self.body_bytes[start:end]

    def row(self, index: int, data_text: bytes, origin: int | None) -> list[Any]:
        """The refs row of candidate `index`, as new_ref_row gives it (data_text: fields_text(index))."""
        row = list(self.new_refs[index][0])
        row[DATA] = data_text
        row[ORIGIN] = origin
        return row

    def whole_op(self, index: int) -> dict[str, Any]:
        """The op of candidate `index` as it was signed (its reference turned out not to be new)."""
        stub = self.entries[index][2]
        return ops.ref_put(stub["ref"], loads(self.fields_text(index)))


# --- the child's side -----------------------------------------------------------------------------

_REJECTED, _PARSED, _FAILED = 0, 1, 2
_BODY_AT = len(b'{"body":')


def prepare(wire: bytes, library_id: str) -> tuple[Any, ...]:
    """The answer for one wire: what parse says of it, and the rows of its candidates."""
    try:
        cs = cs_engine.parse(wire, library_id)
    except cs_engine.ChangeSetRejected as exc:
        return (_REJECTED, str(exc.reason), exc.message)  # marshal takes plain strings only
    body = cs.body_bytes
    in_wire = wire.startswith(b'{"body":') and wire[_BODY_AT : _BODY_AT + len(body)] == body
    # As sync._plan walks them, supposing every reference absent; the receiver narrows it down.
    fresh = {op["ref"] for _, _, op in cs.entries if op["op"] == ops.REF_PUT}
    texts = logtext.FieldsTexts(body)
    entries: list[tuple[int, int, dict[str, Any]]] = []
    new_refs: dict[int, NewRef] = {}
    for index, (seq, ts, op) in enumerate(cs.entries):
        if is_plain_new_ref(op, fresh) and None not in op["fields"].values():
            start, end = texts.span(seq, ts, op["ref"])
            new_refs[index] = (tuple(new_ref_row(cs.author, seq, ts, op, b"", None)), start, end)
            op = {"op": ops.REF_PUT, "ref": op["ref"]}
        if op["op"] in (ops.REF_PUT, ops.REF_DELETE):
            fresh.discard(op["ref"])
        entries.append((seq, ts, op))
    header = (cs.author, cs.first, cs.last, cs.prev, cs.deps, cs.signature, cs.body_digest)
    return (_PARSED, *header, None if in_wire else body, len(body), entries, new_refs)


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: the library id, then wires, each answered in order; ends when stdin does."""
    gc.disable()  # as in sync.receive: millions of small containers, none in cycles
    library_id = (child_process.read_frame(stdin, FRAME_LIMIT) or b"").decode("ascii")
    child_process.write_frame(stdout, b"ready")
    while (wire := child_process.read_frame(stdin, FRAME_LIMIT)) is not None:
        try:
            answer = prepare(wire, library_id)
        except Exception as exc:  # a bug: the receiver parses this wire itself and meets it there
            answer = (_FAILED, repr(exc))
        child_process.write_frame(stdout, marshal.dumps(answer))


# --- the receiver's side --------------------------------------------------------------------------


class Preparer:
    """A child process that prepares wires, answering in the order they were given.

    Two threads move the bytes (pipes block, and each releases the interpreter lock while it
    waits); the caller decodes answers on its own thread."""

    def __init__(self, library_id: str) -> None:
        self.library_id = library_id
        self.process = child_process.start("prepare")
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._gone = False
        self._outbox.put(library_id.encode("ascii"))
        self._writer = threading.Thread(target=self._write, name="p2psync-prepare-write", daemon=True)
        self._reader = threading.Thread(target=self._read, name="p2psync-prepare-read", daemon=True)
        self._writer.start()
        self._reader.start()

    def ready(self) -> bool:
        """The child has started and can take wires (it takes a few hundred ms to import)."""
        return self._ready.is_set() and not self._gone

    def submit(self, wire: bytes) -> None:
        self._outbox.put(wire)

    def answer(self, wire: bytes) -> cs_engine.ChangeSet | cs_engine.ChangeSetRejected | None:
        """What the child made of the next wire submitted (`wire`, which the caller kept), or
        None if it has failed: the caller then parses that wire, and every later one, itself."""
        if self._gone:
            return None
        try:
            payload = self._answers.get(timeout=ANSWER_SECONDS)
        except queue.Empty:
            payload = None
        if payload is None:
            self._give_up()
            return None
        try:
            return _decode(marshal.loads(payload), wire, self.library_id)
        except Exception:  # an answer we cannot read (or _FAILED): parse it here
            self._give_up()
            return None

    def close(self) -> None:
        """End the child and the threads (at once if answers were left unread)."""
        self._outbox.put(None)
        if not self._answers.empty() or self._gone:
            self._give_up()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._give_up()
            self.process.wait()
        self._writer.join()
        self._reader.join()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _give_up(self) -> None:
        self._gone = True
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its handle

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (item := self._outbox.get()) is not None:
                child_process.write_frame(stdin, item)  # type: ignore[arg-type]
        except OSError:  # the child has gone; the reader sees the end
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            if child_process.read_frame(stdout, FRAME_LIMIT) == b"ready":  # type: ignore[arg-type]
                self._ready.set()
                while (payload := child_process.read_frame(stdout, FRAME_LIMIT)) is not None:  # type: ignore[arg-type]
                    self._answers.put(payload)
        except (OSError, MemoryError):
            pass
        finally:
            self._answers.put(None)


def _decode(answer: tuple[Any, ...], wire: bytes, library_id: str) -> cs_engine.ChangeSet | cs_engine.ChangeSetRejected:
    if answer[0] == _REJECTED:
        return cs_engine.ChangeSetRejected(answer[1], answer[2])
    if answer[0] != _PARSED:
        raise ValueError("the child could not prepare this change set")
    _, author, first, last, prev, deps, signature, digest, body, body_len, entries, new_refs = answer
    if body is None:  # the canonical body is the wire's own (the child compared them)
        body = wire[_BODY_AT : _BODY_AT + body_len]
    return PreparedChangeSet(library_id, author, first, last, prev, deps, entries, signature, body, digest, new_refs)
