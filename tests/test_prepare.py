"""Parsing in a second process (store/prepare.py): what a receive does with the child's answers
must be exactly what it does parsing each change set itself, down to the rows it writes, and the
child going wrong must cost nothing but time."""

from __future__ import annotations

import base64
import io
import json
import marshal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from p2psync.engine import changesets as cs_engine
from p2psync.engine import ops
from p2psync.engine.canonical import encode
from p2psync.store import child_process, prepare, sync
from p2psync.store.apply import is_plain_new_ref, new_ref_row
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal, version_vector
from tests.support import process_alive, snapshot
from tests.sync_support import founded, joined
from tests.test_speedups import DEVICE, entry_lists

LIBRARY = "L" * 32


def _parse_here(wire: bytes) -> Any:
    try:
        return cs_engine.parse(wire, LIBRARY)
    except cs_engine.ChangeSetRejected as exc:
        return exc


@settings(max_examples=800, derandomize=True)
@given(entry_lists())
def test_the_childs_answer_is_what_parse_gives(entries: list[Any]) -> None:
    body = {"v": cs_engine.VERSION, "lib": LIBRARY, "author": DEVICE, "seq": [1, len(entries)], "prev": None}
    body |= {"deps": {}, "entries": entries}
    try:
        wire = encode({"body": body, "sig": base64.b64encode(b"\0" * 64).decode()})
    except TypeError:  # a value JSON cannot hold: nothing to parse
        return
    # Through marshal, as the answer crosses the pipe.
    answer = prepare._decode(marshal.loads(marshal.dumps(prepare.prepare(wire, LIBRARY))), wire, LIBRARY)
    here = _parse_here(wire)
    if isinstance(here, cs_engine.ChangeSetRejected):
        assert isinstance(answer, cs_engine.ChangeSetRejected)
        assert (answer.reason, answer.message) == (here.reason, here.message)
        return
    assert isinstance(answer, prepare.PreparedChangeSet)
    assert (answer.author, answer.first, answer.last, answer.prev, answer.deps, answer.signature) == (
        here.author,
        here.first,
        here.last,
        here.prev,
        here.deps,
        here.signature,
    )
    assert (answer.body_bytes, answer.body_digest, answer.id) == (here.body_bytes, here.body_digest, here.id)
    # The candidates are the entries _plan would write as new references if none existed yet,
    # and each stub holds back nothing: its whole op and its row come back exactly.
    fresh = {op["ref"] for _, _, op in here.entries if op["op"] == ops.REF_PUT}
    for index, (seq, ts, op) in enumerate(here.entries):
        candidate = is_plain_new_ref(op, fresh) and None not in op["fields"].values()
        assert (index in answer.new_refs) == candidate
        if candidate:
            assert answer.entries[index] == (seq, ts, {"op": "ref.put", "ref": op["ref"]})
            assert answer.whole_op(index) == op
            text = answer.fields_text(index)
            assert text == encode(op["fields"])
            assert answer.row(index, text, 7) == new_ref_row(DEVICE, seq, ts, op, text, 7)
        else:
            assert answer.entries[index] == (seq, ts, op)
        if op["op"] in (ops.REF_PUT, ops.REF_DELETE):
            fresh.discard(op["ref"])


def test_a_body_that_is_not_the_wires_own_is_sent_whole() -> None:
    op = {"op": "ref.put", "ref": "a" * 16, "fields": {"type": "book", "title": "T"}, "seen": {}}
    body = {"v": cs_engine.VERSION, "lib": LIBRARY, "author": DEVICE, "seq": [1, 1], "prev": None}
    body |= {"deps": {}, "entries": [[1, 5, op]]}
    # Valid JSON, not canonical (spaces): the signed bytes are the canonical ones, not these.
    wire = json.dumps({"body": body, "sig": base64.b64encode(b"\0" * 64).decode()}).encode()
    answer = prepare.prepare(wire, LIBRARY)
    assert answer[8] == encode(body)
    decoded = prepare._decode(answer, wire, LIBRARY)
    assert decoded.body_bytes == _parse_here(wire).body_bytes


def _varied_history(tmp_path: Path) -> tuple[Library, Library]:
    """A founder and a second device with a bit of everything: new references (some of them
    large, some with a field cleared), edits, trash, permanent delete, groups and memberships."""
    a = founded(tmp_path / "a")
    c = joined(a, tmp_path / "c", "C")
    refs = a.add_references(
        [{"title": f"Paper {i}", "abstract": "word " * (i % 400 + 1) + "end", "year": "2020"} for i in range(900)]
    )
    a.edit_reference(refs[0], {"title": "Edited", "year": None})
    a.trash_reference(refs[1])
    a.empty_trash()
    group = a.create_group("Reading")
    a.add_to_group(group, refs[2:20])
    other = c.add_references([{"title": f"From C {i}", "keywords": ["k"]} for i in range(300)])
    c.edit_reference(other[0], {"keywords": None})
    for library in (a, c):
        seal(library)
    sync.sync_libraries(a, c)
    a.edit_reference(other[1], {"title": "A edits C's"})
    seal(a)
    return a, c


def _stored(library: Library) -> dict[str, Any]:
    """The rows a receive wrote, as written (local row numbers and where log texts sit included)."""
    db = library.db
    return {
        "log": db.execute("SELECT num, device, seq, ts, op, ref FROM changelog ORDER BY num").fetchall(),
        "refs": db.execute("SELECT * FROM refs ORDER BY num").fetchall(),
        "backlog": db.execute("SELECT * FROM search_backlog ORDER BY num").fetchall(),
    }


def _start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the child with the first wire, and wait for it to come up (a receive goes on
    without it meanwhile, and these receives are short)."""
    monkeypatch.setattr(sync, "PARALLEL_AFTER_BYTES", 0)
    monkeypatch.setattr(prepare.Preparer, "ready", lambda self: self._ready.wait(30) and not self._gone)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Start the child at once, and record what it answers."""
    _start_at_once(monkeypatch)
    seen: list[Any] = []
    real = prepare.Preparer.answer

    def answer(self: prepare.Preparer, wire: bytes) -> Any:
        result = real(self, wire)
        seen.append(result)
        return result

    monkeypatch.setattr(prepare.Preparer, "answer", answer)
    return seen


def _receive_both_ways(a: Library, tmp_path: Path, wires: list[bytes]) -> tuple[Library, Library, Any, Any]:
    through_child = Library.create(tmp_path / "child", found=False, library_id=a.library_id)
    here = Library.create(tmp_path / "here", found=False, library_id=a.library_id)
    report_child = receive(through_child, wires)
    report_here = receive(here, wires, parallel=False)
    return through_child, here, report_child, report_here


def test_a_receive_through_the_child_writes_what_one_parsed_here_writes(tmp_path: Path, answers: list[Any]) -> None:
    a, _c = _varied_history(tmp_path)
    wires = list(changesets_since(a, {}))
    child, here, report_child, report_here = _receive_both_ways(a, tmp_path, wires)
    assert any(isinstance(x, prepare.PreparedChangeSet) and x.new_refs for x in answers)  # it was used
    assert report_child.as_dict() == report_here.as_dict() and report_here.rejected == []
    assert _stored(child) == _stored(here)
    assert snapshot(child) == snapshot(here) == snapshot(a)
    for library in (child, here):  # the fields texts, given as bytes, are stored as text
        assert library.db.execute("SELECT count(*) FROM refs WHERE typeof(data) != 'text'").fetchone()[0] == 0
    # What it forwards is what it was sent.
    assert list(changesets_since(child, {})) == wires


def test_a_stub_whose_reference_exists_already_is_applied_whole(
    tmp_path: Path, answers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = founded(tmp_path / "a")
    c = joined(a, tmp_path / "c", "C")
    # Two devices create a reference under the same id (as a restored copy might): the second
    # creation is not new to a receiver that has the first, and the titles conflict there.
    with monkeypatch.context() as patched:
        patched.setattr("p2psync.store.library.new_id", lambda: "sameidsameid2345")
        a.add_reference({"title": "From A"})
        c.add_reference({"title": "From C", "year": "1999"})
    seal(a)
    seal(c)
    wires = list(changesets_since(a, {})) + [w for w in changesets_since(c, version_vector(a))]
    child, here, report_child, report_here = _receive_both_ways(a, tmp_path, wires)
    stubbed = [x for x in answers if isinstance(x, prepare.PreparedChangeSet) and x.author == c.device_id]
    assert stubbed and stubbed[-1].new_refs  # C's creation came as a stub
    assert report_child.as_dict() == report_here.as_dict()
    assert _stored(child) == _stored(here)
    assert snapshot(child) == snapshot(here)
    assert "title" in child.get_reference("sameidsameid2345")["conflicts"]


def test_rejections_come_back_the_same(tmp_path: Path, answers: list[Any]) -> None:
    a, c = _varied_history(tmp_path)
    wires = list(changesets_since(a, {}))
    from_c = [i for i, w in enumerate(wires) if json.loads(w)["body"]["author"] == c.device_id]
    forged = json.loads(wires[from_c[0]])
    forged["body"]["entries"][0][2]["fields"]["title"] = "forged"
    wires[from_c[0]] = encode(forged)
    wires.insert(3, b"not json")
    child, here, report_child, report_here = _receive_both_ways(a, tmp_path, wires)
    assert sorted(r["reason"] for r in report_child.rejected) == ["malformed", "signature"]
    assert report_child.as_dict() == report_here.as_dict()
    assert snapshot(child) == snapshot(here)


def test_the_child_dying_midway_costs_only_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _c = _varied_history(tmp_path)
    wires = list(changesets_since(a, {}))
    _start_at_once(monkeypatch)
    started: list[prepare.Preparer] = []
    real = prepare.Preparer.answer

    def answer(self: prepare.Preparer, wire: bytes) -> Any:
        if not started:
            started.append(self)
            result = real(self, wire)
            self.process.kill()  # our own child
            self.process.wait()
            return result
        return real(self, wire)

    monkeypatch.setattr(prepare.Preparer, "answer", answer)
    child, here, report_child, report_here = _receive_both_ways(a, tmp_path, wires)
    assert started and started[0].process.returncode is not None
    assert report_child.as_dict() == report_here.as_dict()
    assert _stored(child) == _stored(here)


def test_no_child_outlives_a_receive_that_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _c = _varied_history(tmp_path)
    wires = list(changesets_since(a, {}))
    _start_at_once(monkeypatch)
    made: list[prepare.Preparer] = []
    real_init = prepare.Preparer.__init__

    def init(self: prepare.Preparer, library_id: str) -> None:
        real_init(self, library_id)
        made.append(self)

    monkeypatch.setattr(prepare.Preparer, "__init__", init)

    def source() -> Any:
        yield from wires[:-1]
        raise OSError("the disk went away")

    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    with pytest.raises(OSError):
        receive(b, source())
    assert made and all(p.process.returncode is not None for p in made)
    assert not b.db.conn.in_transaction
    # What was committed before stays, and the rest arrives with the next sync.
    receive(b, changesets_since(a, version_vector(b)))
    assert snapshot(b) == snapshot(a)


def test_small_receives_and_batched_ones_start_no_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _c = _varied_history(tmp_path)
    made: list[str] = []
    monkeypatch.setattr(sync, "Preparer", lambda library_id: made.append(library_id))
    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    receive(b, changesets_since(a, {}))  # about a megabyte: below PARALLEL_AFTER_BYTES
    monkeypatch.setattr(sync, "PARALLEL_AFTER_BYTES", 0)
    d = Library.create(tmp_path / "d", found=False, library_id=a.library_id)
    receive(d, changesets_since(a, {}), parallel=False)  # one batch of many (the network's way)
    assert made == []
    assert snapshot(b) == snapshot(d) == snapshot(a)


_KILLED_MIDWAY = """
import sys, time
from pathlib import Path
from p2psync.store import prepare, sync
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive
sync.PARALLEL_AFTER_BYTES = 0
prepare.Preparer.ready = lambda self: self._ready.wait(30)
def answer(self, wire):
    print(self.process.pid, flush=True)
    time.sleep(60)  # killed here, with the child alive and waiting for more
prepare.Preparer.answer = answer
a = Library.open(Path(sys.argv[1]))
b = Library.create(Path(sys.argv[2]), found=False, library_id=a.library_id)
receive(b, changesets_since(a, {}))
"""


def test_the_child_ends_when_the_receiver_is_killed(tmp_path: Path) -> None:
    a, _c = _varied_history(tmp_path)
    a.close()
    command = [sys.executable, "-c", _KILLED_MIDWAY, str(tmp_path / "a"), str(tmp_path / "b")]
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        child = int(receiver.stdout.readline())
    finally:
        receiver.kill()  # SIGKILL: no finally, no close(); only the pipes end
        receiver.wait()
    # With its pipes closed the child reads the end of its input and exits (it may stay a zombie
    # until whoever inherits it reaps it).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process_alive(child):
        time.sleep(0.05)
    assert not process_alive(child)
    # And the library it was receiving into opens and takes the sync again.
    a = Library.open(tmp_path / "a")
    b = Library.open(tmp_path / "b")
    receive(b, changesets_since(a, version_vector(b)), parallel=False)
    assert snapshot(b) == snapshot(a)


def test_a_frame_length_beyond_the_limit_ends_the_stream() -> None:
    """An out-of-step pipe reads as its end (the receiver then parses the rest itself), not as a
    request for gigabytes of memory."""
    good = (5).to_bytes(8, "little") + b"hello"
    bad = (prepare.FRAME_LIMIT + 1).to_bytes(8, "little") + b"x" * 16
    stream = io.BytesIO(good + bad)
    assert child_process.read_frame(stream, prepare.FRAME_LIMIT) == b"hello"
    assert child_process.read_frame(stream, prepare.FRAME_LIMIT) is None
