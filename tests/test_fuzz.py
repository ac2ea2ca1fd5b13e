"""Hostile input (DESIGN.md section 7): malformed, oversized, replayed and forged input, made by hypothesis.

One rule for every parser and entry point: the answer is a result or a clear error (a P2PSyncError
subclass, never a KeyError or a RecursionError), and a refused input changed nothing.

  - change sets: real wires from a founder A (references, groups, an attachment, an emptied
    trash) and two joined replicas, mutated byte by byte, value by value and field by field, some
    re-signed with a real or a stranger's key; then replayed, duplicated and shuffled;
  - operations: ops.check on random JSON and on mutations of real operations;
  - formats: detection and every reader on random text, random bytes and damaged sample files;
    read_file on random bytes;
  - backups: flipped, truncated and forged archives.

Libraries are built once per module; each example works on a copy of a closed library folder.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2psync import formats
from p2psync.crypto.identity import DeviceIdentity
from p2psync.engine import changesets, ops
from p2psync.engine.canonical import encode
from p2psync.errors import FileProblem, InvalidValue, LibraryCorrupt, P2PSyncError, UnknownField
from p2psync.model import fields as catalogue
from p2psync.store import backup as backups
from p2psync.store.library import Library, device_add_op
from p2psync.store.sync import ReceiveReport, changesets_since, receive, seal, sync_libraries, version_vector
from tests.support import replay, snapshot
from tests.sync_support import digest, founded, joined

DATA = Path(__file__).parent / "data" / "formats"
SCALE = int(os.environ.get("P2PSYNC_FUZZ_SCALE", "1"))  # e.g. 20 for a deeper run by hand
FUZZ = settings(
    max_examples=200 * SCALE,
    # The default run (make test, CI) sees the same examples every time, so it cannot fail at
    # random on a fresh clone; P2PSYNC_FUZZ_SCALE > 1 explores new ones (run it by hand).
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
REASONS = {
    "oversized",
    "malformed",
    "version",
    "library",
    "chain",
    "schema",
    "signature",
    "fork",
    "gap",
    "revoked",
    "membership",
    "unknown_author",
}


# --- the world: three devices of one library, and the change sets between them ---------------


@dataclass(repr=False)
class World:
    library_id: str
    b_folder: Path  # B before A's latest changes (closed; each example opens a copy)
    empty_folder: Path  # a receiver of the same library that holds nothing yet
    to_b: list[bytes]  # valid change sets B lacks, oldest first
    every: list[bytes]  # every change set A holds, oldest first
    ids: set[str]  # the ids of those change sets
    keys: dict[str, DeviceIdentity]  # "A", "B", "C" and a "stranger": the keys a forger might hold
    b_snapshot: dict[str, Any]
    a_snapshot: dict[str, Any]
    a_digest: str
    ops: list[dict[str, Any]]  # every operation in A's log: real ones to mutate
    targets: list[str]  # every reference and group id, and one that names nothing

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # keep hypothesis's reports short
        printer.text("World(...)")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("fuzz-world")
    a = founded(root / "a", "home")
    ids = a.add_references(
        {"title": f"Paper {i} – Grüße", "authors": [{"family": "Curie", "given": "Marie"}], "year": "1903"}
        for i in range(5)
    )
    reading = a.create_group("Reading")
    a.add_to_group(reading, ids[:3])
    b = joined(a, root / "b", "work")
    c = joined(a, root / "c", "laptop")
    b.close()  # B misses everything from here on
    # C edits and syncs with A only: A's later change sets depend on C's, so B must wait for them.
    c.edit_reference(ids[0], {"volume": "3", "keywords": ["radium", "polonium"]})
    sync_libraries(a, c)
    pdf = root / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4 fuzz")
    a.attach(ids[1], pdf)
    seal(a)
    a.trash_reference(ids[4])
    a.empty_trash()
    seal(a)
    later = a.create_group("Later")
    a.add_to_group(later, [ids[0], ids[2]])
    a.rename_group(reading, "Reading list")
    seal(a)
    a.edit_reference(ids[2], {"title": "Changed", "authors": [{"literal": "WHO"}]})
    a.remove_from_group(later, [ids[0]])
    a.delete_group(later)
    a.trash_reference(ids[3])
    seal(a)
    empty = Library.create(root / "empty", "empty", found=False, library_id=a.library_id)
    empty.close()
    with Library.open(root / "b") as pristine:
        to_b = list(changesets_since(a, version_vector(pristine)))
        b_snapshot = snapshot(pristine)
    every = list(changesets_since(a, {}))
    assert len(to_b) >= 5 and len(every) > len(to_b)
    result = World(
        library_id=a.library_id,
        b_folder=root / "b",
        empty_folder=root / "empty",
        to_b=to_b,
        every=every,
        ids={changesets.parse(w, a.library_id).id for w in every},
        keys={"A": a.identity(), "B": DeviceIdentity.load(root / "b" / "device.key"), "C": c.identity()},
        b_snapshot=b_snapshot,
        a_snapshot=snapshot(a),
        a_digest=digest(a),
        ops=[op for _, _, _, op in a.log_entries()],
        targets=[*ids, reading, later, "aaaaaaaaaaaaaaaa"],
    )
    result.keys["stranger"] = DeviceIdentity.generate()
    a.close()
    c.close()
    return result


@contextlib.contextmanager
def copy_of(folder: Path) -> Iterator[Library]:
    """A library opened from a fresh copy of a closed library folder."""
    with tempfile.TemporaryDirectory(prefix="p2psync-fuzz-") as tmp:
        shutil.copytree(folder, Path(tmp) / "lib")
        library = Library.open(Path(tmp) / "lib")
        try:
            yield library
        finally:
            library.close()


def integrity_ok(library: Library) -> bool:
    return library.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def check_report(report: ReceiveReport) -> None:
    """Every refusal carries a known reason and a sentence a person can read."""
    for problem in report.rejected:
        assert problem["reason"] in REASONS, problem
        assert isinstance(problem["message"], str) and problem["message"].strip(), problem


# --- values hostile peers send ---------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates included
HUGE_INTS = [2**53, 2**53 + 1, -(2**53) - 1, 2**63, 2**64 + 1, 10**300, -(10**4000)]  # JSON can carry these
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=ANY_CHAR, max_size=20),
    st.sampled_from(["", "x" * 5000, "\u0000", "\ud800", "a\udfffb", "ref.put", "device.add", "10.1/x"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet=ANY_CHAR, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Texts that no Python value serialises to: numbers and nesting beyond what a parser should take.
raw_json = st.one_of(
    st.sampled_from(
        [
            "1" * 5000,
            "-" + "9" * 4400,
            "1e999",
            "-1e999",
            "2e-400",
            "-0",
            "NaN",
            "Infinity",
            "-Infinity",
            '"\\ud800"',
            '"\\udc00\\ud800"',
            '"\\u0000"',
            '"' + "x" * 100_000 + '"',
            "",
            "nul",
            "[",
            "{",
            '{"a":1,"a":2}',
        ]
    ),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)
positions = st.integers(min_value=0, max_value=2**31)
TOKENS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\\u", b"0", b"-1", b"null", b"\xff", b"\xc3", b"\x00"]

byte_edits = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16) | st.sampled_from(TOKENS)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("splice"), positions, st.integers(0, 100), positions),
)
json_edits = st.one_of(
    st.tuples(st.just("replace"), positions, json_values),
    st.tuples(st.just("raw"), positions, raw_json),
    st.tuples(st.just("drop"), positions),
    st.tuples(st.just("add"), positions, st.text(max_size=8), json_values),
    st.tuples(st.just("dup_first"), positions, json_values),  # {"k": junk, ..., "k": real}: last one wins
    st.tuples(st.just("dup_last"), positions, json_values),  # {..., "k": real, "k": junk}
    st.tuples(st.just("reorder"), positions),
)
counts = st.one_of(
    st.integers(-2, 30), st.sampled_from([2**53, 2**53 + 1, 10**30]), st.booleans(), st.floats(0, 10), st.none()
)
shifts = st.integers(-2, 2).map(lambda d: f"{d:+d}")  # "+1": one more than the real value (a near miss)
devices = st.sampled_from(["A", "B", "C", "stranger", "AAAA", "lower", ""])
field_edits = st.one_of(
    st.tuples(st.just("seq"), st.tuples(shifts, shifts) | st.lists(counts, max_size=3)),
    st.tuples(
        st.just("prev"),
        st.one_of(
            st.none(),
            st.integers(0, 50).map(lambda i: f"@{i}"),  # the id of another real change set
            st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65),
            json_values,
        ),
    ),
    st.tuples(st.just("deps"), st.dictionaries(devices, st.integers(0, 30), max_size=3)),
    st.tuples(st.just("deps"), st.dictionaries(devices, counts, max_size=3) | json_values),
    st.tuples(st.just("lib"), st.sampled_from(["", "other", None, 1, "@lib-x", "@LIB"])),
    st.tuples(st.just("v"), st.sampled_from([0, 2, "1", 1.0, True, None, [1], 2**64])),
    st.tuples(st.just("author"), devices),
    st.tuples(st.just("entry_ts"), positions, counts),
    st.tuples(st.just("entry_seq"), positions, shifts | counts),
    st.tuples(st.just("entry_op"), positions, positions, json_values),
    st.tuples(st.just("entry_swap_op"), positions, positions),  # another real operation, out of its context
    st.tuples(st.just("entry_target"), positions, positions),  # the operation aimed at another or no object
    st.tuples(st.just("entries"), st.sampled_from(["drop_first", "drop_last", "dup", "swap", "empty", "reverse"])),
    st.tuples(
        st.just("sig"),
        st.one_of(
            st.binary(min_size=0, max_size=70).map(lambda b: base64.b64encode(b).decode()),
            st.sampled_from(["", "====", "A" * 86 + "==", "A" * 86 + "=B", "A" * 88]),
            st.integers(0, 50).map(lambda i: f"@{i}"),  # the signature of another real change set
            json_values,
        ),
    ),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value inside a JSON value, the value itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def dump(value: Any, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


Hook = Callable[[tuple[Any, ...], Any], "str | None"]


def to_json(value: Any, hook: Hook, ascii_only: bool = True, path: tuple[Any, ...] = ()) -> str:
    """JSON text of value; hook(path, value) may write any value's text itself."""
    text = hook(path, value)
    if text is not None:
        return text
    if isinstance(value, dict):
        items = (f"{dump(k, ascii_only)}:{to_json(v, hook, ascii_only, (*path, k))}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, hook, ascii_only, (*path, i)) for i, v in enumerate(value)) + "]"
    return dump(value, ascii_only)


def no_hook(path: tuple[Any, ...], value: Any) -> str | None:
    return None


def edit_value(message: Any, edit: tuple[Any, ...]) -> Any:
    """Replace, drop or add one value inside a decoded wire, in place; return the (new) whole."""
    kind, pos = edit[0], edit[1]
    inside = list(paths(message))
    target = inside[pos % len(inside)]
    if kind == "replace":
        if not target:
            return edit[2]
        get(message, target[:-1])[target[-1]] = edit[2]
    elif kind == "drop" and len(inside) > 1:
        target = inside[1 + pos % (len(inside) - 1)]
        del get(message, target[:-1])[target[-1]]
    elif kind == "add" and isinstance(get(message, target), dict):
        get(message, target)[edit[2]] = edit[3]
    return message


def edit_json(message: Any, edit: tuple[Any, ...], ascii_only: bool = True) -> str:
    """Apply one value-level edit to a decoded wire and write it out as (possibly odd) JSON."""
    kind, pos = edit[0], edit[1]
    inside = list(paths(message))
    dicts = [p for p in inside if isinstance(get(message, p), dict) and get(message, p)]
    target = inside[pos % len(inside)]
    if kind == "raw":  # text no Python value serialises to
        return to_json(message, lambda p, v: edit[2] if p == target else None, ascii_only)
    if kind in ("dup_first", "dup_last", "reorder") and dicts:
        where = dicts[pos % len(dicts)]
        items = [(k, to_json(v, no_hook, ascii_only)) for k, v in get(message, where).items()]
        if kind == "dup_first":
            items.insert(0, (items[pos % len(items)][0], dump(edit[2], ascii_only)))
        elif kind == "dup_last":
            items.append((items[pos % len(items)][0], dump(edit[2], ascii_only)))
        else:
            items.reverse()
        text = "{" + ",".join(f"{dump(k, ascii_only)}:{v}" for k, v in items) + "}"
        return to_json(message, lambda p, v: text if p == where else None, ascii_only)
    return to_json(edit_value(message, edit), no_hook, ascii_only)


def edit_bytes(wire: bytes, edit: tuple[Any, ...], others: list[bytes]) -> bytes:
    kind, pos = edit[0], edit[1] % (len(wire) + 1)
    if kind == "flip" and wire:
        pos %= len(wire)
        return wire[:pos] + bytes([wire[pos] ^ edit[2]]) + wire[pos + 1 :]
    if kind == "truncate":
        return wire[:pos]
    if kind == "insert":
        return wire[:pos] + edit[2] + wire[pos:]
    if kind == "delete":
        return wire[:pos] + wire[pos + edit[2] :]
    if kind == "splice":
        other = others[edit[2] % len(others)]
        return wire[:pos] + other[edit[3] % (len(other) + 1) :]
    return wire


def device_for(world: World, name: str) -> str:
    if name in world.keys:
        return world.keys[name].device_id
    if name == "lower":
        return world.keys["A"].device_id.lower()
    return name


def edit_fields(world: World, message: dict[str, Any], edit: tuple[Any, ...]) -> None:
    """Change one field of a decoded wire the way a confused or malicious peer would."""
    body = message["body"] if isinstance(message.get("body"), dict) else {}
    entries = body.get("entries") if isinstance(body.get("entries"), list) else []
    kind = edit[0]

    def real(value: Any, part: str) -> Any:  # "@3": that part of another real change set
        if isinstance(value, str) and value.startswith("@") and value[1:].isdigit():
            other = world.every[int(value[1:]) % len(world.every)]
            return changesets.parse(other, world.library_id).id if part == "id" else json.loads(other)["sig"]
        return value

    if kind == "seq":
        seq = body.get("seq")
        if isinstance(edit[1], tuple) and isinstance(seq, list) and len(seq) == 2:
            body["seq"] = [plus(seq[0], edit[1][0]), plus(seq[1], edit[1][1])]
        else:
            body["seq"] = list(edit[1])
    elif kind == "prev":
        body["prev"] = real(edit[1], "id")
    elif kind == "deps":
        value = edit[1]
        body["deps"] = {device_for(world, d): s for d, s in value.items()} if isinstance(value, dict) else value
    elif kind == "lib":
        value = edit[1]
        body["lib"] = {"@lib-x": world.library_id + "x", "@LIB": world.library_id.upper()}.get(value, value)
    elif kind == "v":
        body["v"] = edit[1]
    elif kind == "author":
        body["author"] = device_for(world, edit[1])
    elif kind in ("entry_ts", "entry_seq") and entries:
        entry = entries[edit[1] % len(entries)]
        if isinstance(entry, list) and len(entry) == 3:
            value = edit[2]
            entry[1 if kind == "entry_ts" else 0] = plus(entry[0], value) if isinstance(value, str) else value
    elif kind == "entry_op" and entries:
        entry = entries[edit[1] % len(entries)]
        if isinstance(entry, list) and len(entry) == 3:
            inside = list(paths(entry[2]))
            where = inside[edit[2] % len(inside)]
            if where:
                get(entry[2], where[:-1])[where[-1]] = edit[3]
            else:
                entry[2] = edit[3]
    elif kind == "entry_swap_op" and entries:
        entry = entries[edit[1] % len(entries)]
        if isinstance(entry, list) and len(entry) == 3:
            entry[2] = copy.deepcopy(world.ops[edit[2] % len(world.ops)])
    elif kind == "entry_target" and entries:
        entry = entries[edit[1] % len(entries)]
        if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], dict):
            for key in ("ref", "group"):
                if key in entry[2]:
                    entry[2][key] = world.targets[edit[2] % len(world.targets)]
    elif kind == "entries" and isinstance(body.get("seq"), list) and len(body["seq"]) == 2:
        how, seq = edit[1], body["seq"]  # a careful forger keeps the sequence range consistent
        if how == "drop_first" and entries:
            del entries[0]
            seq[0] = plus(seq[0], "+1")
        elif how == "drop_last" and entries:
            del entries[-1]
            seq[1] = plus(seq[1], "-1")
        elif how == "dup" and entries and isinstance(entries[-1], list) and entries[-1]:
            seq[1] = plus(seq[1], "+1")
            entries.append([seq[1], *copy.deepcopy(entries[-1][1:])])
        elif how == "swap" and len(entries) > 1:
            entries[0], entries[1] = entries[1], entries[0]
        elif how == "empty":
            entries.clear()
        else:
            entries.reverse()
    elif kind == "sig":
        message["sig"] = real(edit[1], "sig")


def plus(value: Any, shift: str) -> Any:
    """value moved by a shift such as "+1", if it is a number at all."""
    return value + int(shift) if type(value) is int else value


def resign(world: World, message: dict[str, Any], who: str) -> bool:
    """Sign the (edited) body with a key we hold, as a member gone rogue or a stranger would."""
    body = message.get("body") if isinstance(message, dict) else None
    if not isinstance(body, dict):
        return False
    if who == "author":
        who = next((name for name, key in world.keys.items() if key.device_id == body.get("author")), "stranger")
    try:
        body_bytes = encode(body)
    except (ValueError, TypeError):  # NaN, a lone surrogate: nothing canonical to sign
        return False
    signature = world.keys[who].sign(changesets.signature_input(world.library_id, body_bytes))
    message["sig"] = base64.b64encode(signature).decode("ascii")
    return True


# --- 1. change sets ---------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=2000))
def test_parse_random_bytes(world: World, data: bytes) -> None:
    with contextlib.suppress(changesets.ChangeSetRejected):
        changesets.parse(data, world.library_id)


@settings(FUZZ, max_examples=300 * SCALE)
@given(
    index=st.integers(0, 100),
    mode=st.sampled_from(["bytes", "values", "fields", "signed", "signed", "signed", "mixed"]),
    fields=st.lists(field_edits, min_size=1, max_size=2),
    signer=st.sampled_from(["author", "author", "author", "A", "B", "C", "stranger"]),
    value_edit=json_edits,
    raw_edits=st.lists(byte_edits, min_size=1, max_size=2),
    ascii_only=st.booleans(),
)
def test_mutated_change_sets_are_refused_and_change_nothing(
    world: World,
    index: int,
    mode: str,
    fields: list[tuple[Any, ...]],
    signer: str,
    value_edit: tuple[Any, ...],
    raw_edits: list[tuple[Any, ...]],
    ascii_only: bool,
) -> None:
    """bytes: damaged in transit; values: odd JSON (huge numbers, duplicate keys, lone surrogates);
    fields: a confused peer; signed: a member gone rogue, or a stranger, signing what it likes."""
    pool = world.every + world.to_b[:1] * len(world.every)  # half the time the one B can apply next
    message = json.loads(pool[index % len(pool)])
    if mode in ("fields", "signed", "mixed"):
        for edit in fields:
            edit_fields(world, message, edit)
    signed = mode in ("signed", "mixed") and resign(world, message, signer)
    if mode in ("values", "mixed"):
        text = edit_json(message, value_edit, ascii_only)
    else:
        text = to_json(message, no_hook, ascii_only)
    wire = text.encode("utf-8", "surrogatepass")  # a lone surrogate, unescaped, is invalid UTF-8
    if mode in ("bytes", "mixed"):
        for edit in raw_edits:
            wire = edit_bytes(wire, edit, world.every)

    parsed: changesets.ChangeSet | None = None
    try:
        parsed = changesets.parse(wire, world.library_id)
    except changesets.ChangeSetRejected as exc:
        assert exc.reason in REASONS and exc.message.strip()

    with copy_of(world.b_folder) as b:
        report = receive(b, [wire])
        check_report(report)
        outcome = [p["reason"] for p in report.rejected] or ["applied"] * report.applied or ["other"]
        event(f"{mode}: {outcome[0]}{' (re-signed)' if signed else ''}")
        assert report.applied + report.duplicates + report.waiting + len(report.rejected) == 1
        if parsed is None:
            assert report.rejected
        if report.applied == 0:
            assert snapshot(b) == world.b_snapshot
            # A refused forgery holds nothing back: the real change sets still arrive whole.
            check_report(receive(b, world.to_b))
            assert digest(b) == world.a_digest
        else:
            assert parsed is not None
            if not signed:  # only a real key makes new change sets; the rest must be a real one re-encoded
                assert parsed.id in world.ids
            assert integrity_ok(b)
            with tempfile.TemporaryDirectory(prefix="p2psync-fuzz-") as tmp:
                replica = replay(b, Path(tmp) / "replica")  # what was applied is exactly what was logged
                try:
                    assert snapshot(replica) == snapshot(b)
                finally:
                    replica.close()


# What a real change set that arrives too early is told: its predecessor, or its author's
# introduction, has not arrived yet. Never a signature, chain or fork problem.
OUT_OF_ORDER = {"gap", "unknown_author"}


@settings(FUZZ, max_examples=100 * SCALE)
@given(data=st.data(), receiver=st.sampled_from(["b", "empty"]))
def test_replayed_and_shuffled_change_sets_converge(world: World, data: st.DataObject, receiver: str) -> None:
    n = len(world.every)
    order = data.draw(st.permutations(range(n)), label="order")
    for extra, at in data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 3 * n)), max_size=n)):
        order.insert(at % (len(order) + 1), extra)  # replays, anywhere
    batch = [world.every[i] for i in order]
    with copy_of(world.b_folder if receiver == "b" else world.empty_folder) as library:
        # As one stream, again and again: out-of-order ones are refused as gaps, nothing worse.
        for _ in range(n + 1):
            report = receive(library, batch)
            check_report(report)
            assert {p["reason"] for p in report.rejected} <= OUT_OF_ORDER
            assert integrity_ok(library)
            if report.applied == 0:
                break
        if not report.rejected and report.waiting == 0:  # nothing blocked: everything arrived
            assert digest(library) == world.a_digest
        # One per call: a gap only holds back itself, so every round applies at least one.
        for _ in range(n + 1):
            reports = [receive(library, [wire]) for wire in batch]
            for one in reports:
                check_report(one)
                assert {p["reason"] for p in one.rejected} <= OUT_OF_ORDER
            if not sum(one.applied for one in reports):
                break
        assert digest(library) == world.a_digest
        assert snapshot(library) == world.a_snapshot
        # Replaying all of it once more is a string of duplicates and changes nothing.
        again = receive(library, batch)
        assert (again.applied, again.rejected, again.waiting) == (0, [], 0)
        assert again.duplicates == len(batch)
        assert snapshot(library) == world.a_snapshot


def test_forged_introduction_is_refused(world: World) -> None:
    """A stranger that introduces itself in A's name, with its own signature, gets nowhere."""
    stranger = DeviceIdentity.generate()
    claim = device_add_op(stranger, "evil", stranger, world.library_id)
    claim["introducer"] = world.keys["A"].device_id
    put = {"op": "ref.put", "ref": "aaaaaaaaaaaaaaaa", "fields": {"title": "Spam"}, "seen": {}}
    for introducer in (claim, {**claim, "introducer": None, "signature": None}):
        cs = changesets.build(
            world.library_id, stranger.device_id, None, {}, [(1, 1, introducer), (2, 2, put)], stranger.sign
        )
        with copy_of(world.b_folder) as b:
            report = receive(b, [cs.wire()])
            assert report.applied == 0 and [p["reason"] for p in report.rejected] in (["signature"], ["unknown_author"])
            assert snapshot(b) == world.b_snapshot


def test_oversized_change_sets_are_refused(world: World) -> None:
    message = json.loads(world.to_b[0])
    message["body"]["entries"] *= changesets.MAX_ENTRIES + 1
    for wire in (b" " * (changesets.MAX_BYTES + 1), json.dumps(message).encode()):
        with copy_of(world.b_folder) as b:
            report = receive(b, [wire])
            assert report.applied == 0 and report.rejected[0]["reason"] == "oversized"
            assert snapshot(b) == world.b_snapshot


# --- 2. operations ----------------------------------------------------------------------------

OP_KEYS = ["op", "ref", "group", "fields", "seen", "members", "refs", "name", "value", "device", "key", "introducer"]
op_shaped = st.builds(
    lambda kind, values: {"op": kind, **values},
    st.sampled_from(ops.KINDS),
    st.dictionaries(st.sampled_from([*OP_KEYS, "signature", "upto"]), json_values, max_size=6),
)


def check_op(op: Any) -> None:
    try:
        assert ops.check(op) is op  # unchanged when accepted
    except (InvalidValue, UnknownField) as exc:
        assert exc.message.strip()


@FUZZ
@given(op=json_values | op_shaped)
def test_check_random_operations(op: Any) -> None:
    check_op(op)


@settings(FUZZ, max_examples=300 * SCALE)
@given(
    index=st.integers(0, 1000),
    edits=st.lists(st.tuples(positions, st.sampled_from(["set", "drop"]), json_values), min_size=1, max_size=3),
)
def test_check_mutated_operations(world: World, index: int, edits: list[tuple[int, str, Any]]) -> None:
    op = copy.deepcopy(world.ops[index % len(world.ops)])
    for pos, how, value in edits:
        inside = list(paths(op))
        where = inside[pos % len(inside)]
        if not where:
            op = value
            continue
        parent = get(op, where[:-1])
        if how == "drop":
            del parent[where[-1]]
        else:
            parent[where[-1]] = value
    check_op(op)


# --- 3. formats -------------------------------------------------------------------------------

SAMPLES = {
    fmt: sorted(p for p in (DATA / folder).iterdir() if p.is_file())
    for fmt, folder in [("ris", "ris"), ("bibtex", "bibtex"), ("endnote-xml", "endnote-xml"), ("csl-json", "csl-json")]
}
FORMAT_TOKENS = [
    "TY  - ",
    "ER  - ",
    "AU  - ",
    "PY  - ",
    "T1  - ",
    "\n",
    "\r\n",
    "@article{",
    "@string{",
    "@comment{",
    "@preamble{",
    "}",
    "{",
    " = ",
    ",",
    '"',
    "#",
    "\\",
    "<?xml version='1.0'?>",
    "<records>",
    "<record>",
    "</record>",
    "<titles><title>",
    "<style face='bold'>",
    "&amp;",
    "&#0;",
    "&foo;",
    "<![CDATA[",
    "<!DOCTYPE x [<!ENTITY e 'e'>]>",
    "[",
    "]",
    '{"type":"book","id":1,',
    '"author":[{"family":',
    '"issued":{"date-parts":[[',
    '"title":"\\ud800"',
    '"title":"\\ud83d\\ude00"',
    "\ud800",
    "null",
    "-1",
    "99999999999999999999",
    "\ufeff",
    "\x00",
]
tokens_text = st.lists(st.sampled_from(FORMAT_TOKENS) | st.text(alphabet=ANY_CHAR, max_size=6), max_size=60).map(
    "".join
)
text_edits = st.lists(
    st.one_of(
        st.tuples(st.just("put"), positions, st.sampled_from(FORMAT_TOKENS) | st.text(alphabet=ANY_CHAR, max_size=4)),
        st.tuples(st.just("cut"), positions, st.integers(1, 200)),
        st.tuples(st.just("copy"), positions, st.integers(1, 400), positions),
        st.tuples(st.just("end"), positions),
    ),
    max_size=4,
)


def read_everything(text: str, hint: str | None = None) -> None:
    """Detection and every reader: a ReadResult of valid records, or a P2PSyncError."""
    fmts = list(formats.FORMATS)
    with contextlib.suppress(P2PSyncError):
        fmts.insert(0, formats.guess_format(text, hint))
    for fmt in fmts[:5]:
        for skip in (False, True):
            try:
                result = formats.read(text, fmt, skip_invalid=skip)
            except P2PSyncError as exc:
                assert exc.message.strip()
                continue
            assert isinstance(result, formats.ReadResult)
            for record in result.records:
                for name, value in record.fields.items():
                    assert catalogue.validate(name, value) == value, (fmt, name, value)
                json.dumps(record.fields, ensure_ascii=False).encode("utf-8")  # storable: no lone surrogate
                assert all(isinstance(a, str) for a in record.attachments)


@FUZZ
@given(
    text=st.text(alphabet=ANY_CHAR, max_size=2000) | tokens_text,
    hint=st.sampled_from([None, "x.ris", "x.bib", "x.xml", "x.json", "x.txt"]),
)
def test_formats_on_random_text(text: str, hint: str | None) -> None:
    read_everything(text, hint)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_formats_on_random_bytes(data: bytes) -> None:
    read_everything(data.decode("utf-8", errors="replace"))


@functools.cache
def sample_text(path: Path) -> str:
    return formats.read_file(path)


def edit_text(text: str, edit: tuple[Any, ...]) -> str:
    kind, pos = edit[0], edit[1] % (len(text) + 1)
    if kind == "put":
        return text[:pos] + edit[2] + text[pos:]
    if kind == "cut":
        return text[:pos] + text[pos + edit[2] :]
    if kind == "copy":
        return text[:pos] + text[pos : pos + edit[2]] + text[edit[3] % (len(text) + 1) :]
    return text[:pos]


@FUZZ
@given(
    fmt=st.sampled_from(list(SAMPLES)),
    pick=positions,
    start=st.just(0) | positions,
    size=st.integers(1, 4000),
    edits=text_edits,
)
def test_formats_on_damaged_samples(fmt: str, pick: int, start: int, size: int, edits: list[tuple[Any, ...]]) -> None:
    path = SAMPLES[fmt][pick % len(SAMPLES[fmt])]
    text = sample_text(path)
    start %= len(text)
    text = text[start : start + size]
    for edit in edits:
        text = edit_text(text, edit)
    read_everything(text, path.name)


@functools.cache
def sample_records(fmt: str) -> list[Any]:
    """Every record of every sample file of a format: texts, or decoded items for CSL-JSON."""
    found: list[Any] = []
    for path in SAMPLES[fmt]:
        text = sample_text(path)
        if fmt == "ris":
            found += [r + "\n" for r in re.split(r"(?<=\nER  -)[^\n]*\n", text) if r.strip()]
        elif fmt == "bibtex":
            found += ["@" + r for r in re.split(r"(?m)^@", text) if r.strip()]
        elif fmt == "endnote-xml":
            found += re.findall(r"<record>.*?</record>", text, re.DOTALL)
        else:
            items = json.loads(text)
            found += items if isinstance(items, list) else [items]
    return found


csl_keys = st.sampled_from(["type", "title", "issued", "accessed", "author", "editor", "page", "ISBN", "DOI", "URL"])
csl_keys |= st.sampled_from(
    ["keyword", "container-title", "volume", "number", "language", "note", "date-parts", "literal"]
)
XML_TAGS = ["ref-type", "authors", "author", "titles", "title", "secondary-title", "pages", "volume", "keywords"]
XML_TAGS += ["keyword", "dates", "year", "pub-dates", "date", "urls", "related-urls", "url", "pdf-urls", "style"]
XML_TAGS += ["electronic-resource-num", "abstract", "notes", "isbn", "label", "custom1", "edition", "language"]
xml_edits = st.tuples(
    positions,
    st.sampled_from(["text", "remove", "child", "attribute", "duplicate"]),
    st.sampled_from(XML_TAGS),
    st.sampled_from(["", " ", "2020", "13", "-1", "Journal Article", "99", "file:///a.pdf", "10.1/x", "Doe, J."])
    | st.text(max_size=30),
)


def edit_xml(root: ET.Element, edit: tuple[Any, ...]) -> None:
    """Change one element of a parsed EndNote XML document, keeping it well-formed."""
    elements = list(root.iter())
    parents = {child: parent for parent in elements for child in parent}
    pos, kind, tag, text = edit
    element = elements[pos % len(elements)]
    text = "".join(c for c in text if c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd")  # XML's chars
    if kind == "text":
        element.text = text
    elif kind == "remove" and element in parents:
        parents[element].remove(element)
    elif kind == "child":
        ET.SubElement(element, tag).text = text
    elif kind == "attribute":
        element.set("name", text)
    elif kind == "duplicate" and element in parents:
        parents[element].append(copy.deepcopy(element))


@settings(FUZZ, max_examples=300 * SCALE)
@given(
    fmt=st.sampled_from(list(SAMPLES)),
    pick=positions,
    count=st.integers(1, 3),
    value_edits=st.lists(
        st.tuples(st.sampled_from(["replace", "drop", "add"]), positions, csl_keys, json_values), max_size=4
    ),
    element_edits=st.lists(xml_edits, max_size=5),
    edits=text_edits,
    ascii_only=st.booleans(),
)
def test_formats_on_damaged_records(
    fmt: str,
    pick: int,
    count: int,
    value_edits: list[tuple[Any, ...]],
    element_edits: list[tuple[Any, ...]],
    edits: list[tuple[Any, ...]],
    ascii_only: bool,
) -> None:
    """Whole records from the samples, damaged inside: odd values where the readers expect dates,
    names and types (CSL-JSON, EndNote XML), odd lines and braces (RIS, BibTeX)."""
    records = sample_records(fmt)
    start = pick % len(records)
    chosen = copy.deepcopy(records[start : start + count])
    if fmt == "csl-json":
        for kind, pos, key, value in value_edits:
            chosen = edit_value(chosen, (kind, pos, key, value) if kind == "add" else (kind, pos, value))
        text = dump(chosen, ascii_only)
    elif fmt == "endnote-xml":
        root = ET.fromstring("<xml><records>" + "".join(chosen) + "</records></xml>")
        for edit in element_edits:
            edit_xml(root, edit)
        text = ET.tostring(root, encoding="unicode")
    else:
        text = "".join(chosen)
    for edit in edits[:2]:
        text = edit_text(text, edit)
    read_everything(text, SAMPLES[fmt][0].name)


def test_lone_surrogates_are_refused() -> None:
    """Found by fuzzing: an escaped lone surrogate in CSL-JSON became a field SQLite cannot store."""
    text = '[{"type": "book", "title": "Bad \\ud800"}, {"type": "book", "title": "Good \\ud83d\\ude00"}]'
    with pytest.raises(formats.FormatError, match="Record 1"):
        formats.read(text, "csl-json")
    assert [r.fields["title"] for r in formats.read(text, "csl-json", skip_invalid=True)] == ["Good \U0001f600"]
    for fmt, raw in [("ris", "TY  - JOUR\nTI  - a\udcffb\nER  - \n"), ("endnote-xml", "<records>\ud800</records>")]:
        with pytest.raises(formats.FormatError, match="surrogate"):
            formats.read(raw, fmt)


@pytest.mark.parametrize("encoding", ["base64", "rot13", "zlib", "undefined"])
def test_read_file_with_a_codec_not_for_text(tmp_path: Path, encoding: str) -> None:
    (tmp_path / "x.ris").write_bytes(b"TY  - JOUR\nER  - \n..")
    with pytest.raises(formats.FormatError, match="cannot be read as"):
        formats.read_file(tmp_path / "x.ris", encoding)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-scratch")


@FUZZ
@given(
    data=st.binary(max_size=2000),
    bom=st.sampled_from([b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]),
    encoding=st.sampled_from(
        [
            None,
            None,
            None,
            "utf-8",
            "UTF-8-sig",
            "cp1252",
            "gbk",
            "utf-16",
            "utf-32",
            "latin-1",
            "shift_jis",
            "utf-7",
            "idna",
            "punycode",
            "base64",
            "rot13",
            "zlib",
            "hex",
            "uu",
            "undefined",
            "unicode_escape",
            "raw_unicode_escape",
            "utf-16-be",
            "hz",
            "nonsense",
            "",
        ]
    ),
)
def test_read_file_on_random_bytes(scratch: Path, data: bytes, bom: bytes, encoding: str | None) -> None:
    path = scratch / "import.ris"
    path.write_bytes(bom + data)
    try:
        text = formats.read_file(path, encoding)
    except P2PSyncError as exc:
        assert isinstance(exc, formats.FormatError) and exc.message.strip()
        return
    assert isinstance(text, str)
    read_everything(text[:1000], path.name)  # some codecs ('unicode_escape') can make lone surrogates


# --- 4. backups -------------------------------------------------------------------------------


@dataclass(repr=False)
class Backup:
    data: bytes
    listing: list[tuple[str, str | None, bool]]
    library: Path  # the backed-up library (closed): an existing library that --force would replace

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Backup(...)")


def listing(library: Library) -> list[tuple[str, str | None, bool]]:
    return sorted(
        (r["id"], r.get("title"), r["trashed"]) for t in (False, True) for r in library.list_references(trashed=t)
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    root = tmp_path_factory.mktemp("fuzz-backup")
    library = Library.create(root / "lib", "Thesis")
    ids = library.add_references({"title": f"Paper {i} – Grüße", "year": "2020"} for i in range(4))
    library.add_to_group(library.create_group("Chapter 1"), ids[:2])
    pdf = root / "paper é.pdf"
    pdf.write_bytes(b"%PDF-1.4 " + bytes(range(256)))
    library.attach(ids[0], pdf)
    library.trash_reference(ids[-1])
    backups.backup(library, root / "backup.zip")
    result = Backup((root / "backup.zip").read_bytes(), listing(library), root / "lib")
    library.close()
    return result


def try_restore(archive: Backup, data: bytes, existing: bool) -> tuple[Path, Library | None]:
    """Restore `data`; on refusal check that nothing appeared and nothing was lost."""
    tmp = Path(tempfile.mkdtemp(prefix="p2psync-fuzz-"))
    (tmp / "backup.zip").write_bytes(data)
    target = tmp / "restored"
    if existing:
        shutil.copytree(archive.library, target)
    try:
        backups.restore(tmp / "backup.zip", target, force=existing)
    except (LibraryCorrupt, FileProblem) as exc:
        assert exc.message.strip()
        if existing:  # the library that was there is still there, whole
            with Library.open(target) as old:
                assert listing(old) == archive.listing and integrity_ok(old)
        else:
            assert not target.exists()
        return tmp, None
    finally:
        leftovers = [p.name for p in tmp.iterdir() if p.name.startswith(".p2psync-")]
        assert not leftovers, leftovers
    restored = Library.open(target)
    assert integrity_ok(restored)
    return tmp, restored


backup_edits = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), positions, st.integers(1, 255)),
        st.tuples(st.just("truncate"), positions),
        st.tuples(st.just("delete"), positions, st.integers(1, 64)),
        st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16)),
    ),
    min_size=1,
    max_size=3,
)


@settings(FUZZ, max_examples=150 * SCALE)
@given(edits=backup_edits, existing=st.booleans())
def test_damaged_backups_restore_whole_or_not_at_all(
    archive: Backup, edits: list[tuple[Any, ...]], existing: bool
) -> None:
    data = archive.data
    for edit in edits:
        data = edit_bytes(data, edit, [archive.data])
    tmp, restored = try_restore(archive, data, existing)
    try:
        if restored is not None:  # the damage hit nothing that matters: the same library came back
            assert listing(restored) == archive.listing
            restored.close()
    finally:
        shutil.rmtree(tmp)


def forge(
    archive: Backup,
    member: str,
    edits: list[tuple[Any, ...]],
    value_edit: tuple[Any, ...],
    name: str,
    forge_hash: bool,
    content: bytes | None = None,
) -> bytes:
    """An archive rebuilt by hand (valid ZIP, CRCs right) with one member forged, its hash maybe too."""
    source = zipfile.ZipFile(io.BytesIO(archive.data))
    members = {info.filename: source.read(info) for info in source.infolist()}
    manifest = json.loads(members.pop(backups.MANIFEST))
    if member == "attachment":
        member = next(m for m in members if m.startswith("attachments/"))
    manifest_text = None
    if member == backups.MANIFEST:
        manifest_text = edit_json(manifest, value_edit)
    elif member == "name":
        old = next(m for m in members if m.startswith("attachments/"))
        members[name] = members.pop(old)
        if forge_hash:
            manifest["files"][name] = manifest["files"].pop(old)
    else:
        for edit in edits:
            members[member] = edit_bytes(members[member], edit, [archive.data])
        members[member] = members[member] if content is None else content
        if forge_hash:
            content = members[member]
            manifest["files"][member] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as forged:
        for filename, content in members.items():
            forged.writestr(zipfile.ZipInfo(filename), content, zipfile.ZIP_DEFLATED)  # any name, even ""
        forged.writestr(backups.MANIFEST, manifest_text if manifest_text is not None else json.dumps(manifest))
    return out.getvalue()


def restore_forged(archive: Backup, data: bytes, existing: bool) -> None:
    tmp, restored = try_restore(archive, data, existing)
    try:
        if restored is not None:  # a forger who matches every hash may restore what they like, but whole
            restored.close()
    finally:
        shutil.rmtree(tmp)


@settings(FUZZ, max_examples=150 * SCALE)
@given(
    member=st.sampled_from(["library.sqlite3", "device.key", "attachment", "p2psync-backup.json", "name"]),
    edits=backup_edits,
    value_edit=json_edits,
    name=st.sampled_from(["../x", "attachments/../../x", "/abs", "attachments/a/b/c", "library.sqlite3/x", "", "a\\b"]),
    forge_hash=st.booleans(),
    existing=st.booleans(),
)
def test_forged_backups_restore_whole_or_not_at_all(
    archive: Backup,
    member: str,
    edits: list[tuple[Any, ...]],
    value_edit: tuple[Any, ...],
    name: str,
    forge_hash: bool,
    existing: bool,
) -> None:
    restore_forged(archive, forge(archive, member, edits, value_edit, name, forge_hash), existing)


@pytest.mark.parametrize("byte, bit", [(9, 0), (11, 0)])  # the key's algorithm id: unknown, and Ed448
def test_backup_with_garbled_device_key_is_refused(archive: Backup, byte: int, bit: int) -> None:
    """A forged archive whose device key (hash matching) names another algorithm: a clear refusal."""
    pem = zipfile.ZipFile(io.BytesIO(archive.data)).read("device.key").decode("ascii")
    der = bytearray(base64.b64decode("".join(pem.splitlines()[1:-1])))
    der[byte] ^= 1 << bit
    garbled = f"-----BEGIN PRIVATE KEY-----\n{base64.b64encode(der).decode()}\n-----END PRIVATE KEY-----\n"
    restore_forged(archive, forge(archive, "device.key", [], ("reorder", 0), "", True, garbled.encode()), False)


@pytest.mark.parametrize(
    "case", ["broken deflate stream", "manifest entry not an object", "garbage database", "garbled text"]
)
def test_forged_or_damaged_backups_found_by_fuzzing(archive: Backup, case: str) -> None:
    if case == "broken deflate stream":  # the first member's extra-field length: its data starts elsewhere
        data = edit_bytes(archive.data, ("flip", 28, 1), [])
    elif case == "manifest entry not an object":
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(archive.data)).read(backups.MANIFEST))
        where = list(paths(manifest)).index(("files", "library.sqlite3"))
        data = forge(archive, backups.MANIFEST, [], ("replace", where, None), "", False)
    elif case == "garbage database":  # hash forged to match
        data = forge(archive, "library.sqlite3", [("truncate", 22)], ("reorder", 0), "", True)
    else:  # a byte of the database flipped into invalid UTF-8 text, hash forged to match
        db = zipfile.ZipFile(io.BytesIO(archive.data)).read("library.sqlite3")
        at = db.index(b"Thesis")
        data = forge(archive, "library.sqlite3", [], ("reorder", 0), "", True, db[:at] + b"\xff" + db[at + 1 :])
    restore_forged(archive, data, False)


@pytest.mark.parametrize(
    "value", ["1" * 5000, "[" * 100_000 + "]" * 100_000], ids=["5000-digit number", "deep nesting"]
)
def test_csl_json_with_impossible_values_is_a_format_error(value: str) -> None:
    text = '[{"id": "a", "type": "book", "title": "x", "volume": ' + value + "}]"
    with pytest.raises(formats.FormatError, match="impossible value"):
        formats.read(text, "csl-json")
