"""Applying one change-log entry to the replicated tables.

This is the only code that writes refs, groups, memberships, attachments and tombstones. Local
edits, replays of the log and (with the sync engine) change sets from peers all come through
apply_entry, so the same entries give the same tables whatever their origin. The merge decisions
themselves are the engine's (engine/registers.py); this module only reads and writes rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from p2psync.engine import merge, ops, registers
from p2psync.engine.canonical import dumps
from p2psync.model.fields import FIELDS, LIST, PEOPLE
from p2psync.model.people import display_person

State = dict[str, list[registers.Entry]]
SEARCH_COLUMNS = ("title", "authors", "abstract", "keywords", "notes")


def apply_entry(
    db: sqlite_utils.Database, device: str, seq: int, ts: int, op: dict[str, Any], absent: set[str] | None = None
) -> None:
    """Apply one operation (already checked) with dot (device, seq) and timestamp ts.

    absent: ids known not to be in the refs table yet (a hint from bulk work that saves a lookup
    per new reference); an id is taken out of it once its reference exists.
    """
    dot = (device, seq)
    kind = op["op"]
    if kind == ops.REF_PUT:
        if absent is not None and op["ref"] in absent:
            absent.discard(op["ref"])
            ref = StoredRef(op["ref"], None, {}, {}, False)
        else:
            ref = load_ref(db, op["ref"])
        state = ref.state
        for name, value in op["fields"].items():
            state[name] = registers.write(state.get(name, []), dot, ts, value, op["seen"].get(name, []))
        _store_ref(db, ref, state)
    elif kind == ops.REF_DELETE:
        ref_id = op["ref"]
        if absent is not None:
            absent.discard(ref_id)  # the delete mark creates the row
        ref = load_ref(db, ref_id)
        state = ref.state
        # Mark, do not erase: an edit this delete had not seen must survive it (engine/merge.py).
        state[merge.DELETED] = registers.write(
            state.get(merge.DELETED, []), dot, ts, merge.covered_dots(op["seen"]), op["seen"].get(merge.DELETED, [])
        )
        _store_ref(db, ref, state)
        db.execute("INSERT OR IGNORE INTO tombstones (kind, id) VALUES ('ref', ?)", [ref_id])
    elif kind == ops.GROUP_PUT:
        state = _load_group_state(db, op["group"])
        for name, value in op["fields"].items():
            state[name] = registers.write(state.get(name, []), dot, ts, value, op["seen"].get(name, []))
        _store_group(db, op["group"], state)
    elif kind == ops.GROUP_DELETE:
        group_id = op["group"]
        state = _load_group_state(db, group_id)
        for name, seen in op["seen"].items():
            if name in state:
                state[name] = registers.remove(state[name], seen)
        _store_group(db, group_id, state)
        for ref_id, seen in op["members"].items():
            _remove_member_dots(db, group_id, ref_id, seen)
        db.execute("INSERT OR IGNORE INTO tombstones (kind, id) VALUES ('group', ?)", [group_id])
    elif kind == ops.MEMBER_ADD:
        for ref_id in op["refs"]:
            entries = _load_member_dots(db, op["group"], ref_id)
            _store_member_dots(db, op["group"], ref_id, registers.write(entries, dot, ts, True, []))
    elif kind == ops.MEMBER_REMOVE:
        for ref_id, seen in op["seen"].items():
            _remove_member_dots(db, op["group"], ref_id, seen)
    elif kind == ops.ATTACHMENT_PUT:
        entries = _load_attachment_state(db, op["ref"], op["name"])
        entries = registers.write(entries, dot, ts, op["value"], op["seen"])
        _store_attachment(db, op["ref"], op["name"], entries)
    elif kind == ops.DEVICE_ADD:
        # A device introduced twice (say, paired again) keeps the introduction with the smallest
        # dot, so every machine keeps the same one whatever order they arrive in.
        db.execute(
            "INSERT INTO devices (id, public_key, name, introducer, signature, seq, author) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "introducer = excluded.introducer, signature = excluded.signature, seq = excluded.seq, "
            "author = excluded.author WHERE (excluded.author, excluded.seq) < (devices.author, devices.seq)",
            [op["device"], op["key"], op["name"], op["introducer"], op["signature"], seq, device],
        )
    elif kind == ops.DEVICE_REVOKE:
        # Several revocations of one device keep the smallest cut-off: the same everywhere.
        db.execute(
            "INSERT INTO revocations (device, upto) VALUES (?, ?) "
            "ON CONFLICT (device) DO UPDATE SET upto = min(upto, excluded.upto)",
            [op["device"], op["upto"]],
        )
    else:  # pragma: no cover - ops.check refuses unknown kinds before we get here
        raise ValueError(kind)


# --- references ---------------------------------------------------------------------------------


@dataclass
class StoredRef:
    id: str
    num: int | None  # None: not in the table yet
    data: dict[str, Any]
    state: State
    indexed: bool  # whether the search index holds it (deleted references are not indexed)


def load_ref(db: sqlite_utils.Database, ref_id: str) -> StoredRef:
    row = db.execute("SELECT num, data, state, deleted FROM refs WHERE id = ?", [ref_id]).fetchone()
    if row is None:
        return StoredRef(ref_id, None, {}, {}, False)
    data = json.loads(row[1])
    return StoredRef(ref_id, row[0], data, registers.unpack(json.loads(row[2]), data), not row[3])


def materialize(state: State) -> tuple[dict[str, Any], list[str]]:
    """The provisional value of every field, and the fields in conflict (sorted)."""
    data: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in sorted(state):
        resolved = registers.resolve(state[name])
        if resolved.value is not None:
            data[name] = resolved.value
        if resolved.conflict:
            conflicts.append(name)
    return data, conflicts


def _search_row(data: dict[str, Any]) -> list[str | None]:
    return [search_text(name, data.get(name)) for name in SEARCH_COLUMNS]


def _store_ref(db: sqlite_utils.Database, ref: StoredRef, state: State) -> None:
    state = {name: entries for name, entries in state.items() if entries}
    if ref.num is not None and ref.indexed:
        # The index is contentless: removing a row means repeating exactly what was indexed.
        db.execute(
            "INSERT INTO refs_fts (refs_fts, rowid, title, authors, abstract, keywords, notes) "
            "VALUES ('delete', ?, ?, ?, ?, ?, ?)",
            [ref.num, *_search_row(ref.data)],
        )
    if not state:
        db.execute("DELETE FROM refs WHERE id = ?", [ref.id])
        return
    view = merge.reference_view(state)
    data, conflicts = view.data, view.conflicts
    if merge.DELETED in state:  # kept beside the data so that pack/unpack stay exact
        data = {**data, merge.DELETED: registers.resolve(state[merge.DELETED]).value}
    authors = data.get("authors") or data.get("editors") or []
    values = {
        "type": data.get("type"),
        "title": data.get("title"),
        "year": data.get("year"),
        "first_author": display_person(authors[0]) if authors else None,
        "trashed": 1 if data.get("trashed") else 0,
        "conflict": 1 if conflicts else 0,
        "deleted": 1 if view.deleted else 0,
        "added": data.get("added"),
        "modified": max(e[2] for entries in state.values() for e in entries),
        "data": dumps(data),
        "state": dumps(registers.pack(state)),
    }
    columns = list(values)
    if ref.num is not None:
        num = ref.num
        db.execute(
            "UPDATE refs SET " + ", ".join(f"{c} = ?" for c in columns) + " WHERE num = ?",
            [*values.values(), num],
        )
    else:
        cursor = db.execute(
            f"INSERT INTO refs (id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
            [ref.id, *values.values()],
        )
        num = int(cursor.lastrowid or 0)
    if not view.deleted:
        db.execute(
            "INSERT INTO refs_fts (rowid, title, authors, abstract, keywords, notes) VALUES (?, ?, ?, ?, ?, ?)",
            [num, *_search_row(data)],
        )


def search_text(name: str, value: Any) -> str | None:
    """The words of a field as the search index sees them."""
    if value is None:
        return None
    if name == "authors":
        return None if not value else " ".join(display_person(p) for p in value)
    kind = FIELDS[name].kind if name in FIELDS else None
    if kind == PEOPLE:
        return " ".join(display_person(p) for p in value)
    if kind == LIST:
        return " ; ".join(value)
    return str(value)


# --- groups and memberships -------------------------------------------------------------------


def _load_group_state(db: sqlite_utils.Database, group_id: str) -> State:
    row = db.execute("SELECT state FROM groups WHERE id = ?", [group_id]).fetchone()
    return json.loads(row[0]) if row else {}


def _store_group(db: sqlite_utils.Database, group_id: str, state: State) -> None:
    state = {name: entries for name, entries in state.items() if entries}
    if not state:
        db.execute("DELETE FROM groups WHERE id = ?", [group_id])
        return
    data, conflicts = materialize(state)
    db.execute(
        "INSERT INTO groups (id, name, conflict, state) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, conflict = excluded.conflict, state = excluded.state",
        [group_id, data.get("name"), 1 if conflicts else 0, dumps(state)],
    )


def _load_member_dots(db: sqlite_utils.Database, group_id: str, ref_id: str) -> list[registers.Entry]:
    row = db.execute("SELECT dots FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id]).fetchone()
    return json.loads(row[0]) if row else []


def _store_member_dots(db: sqlite_utils.Database, group_id: str, ref_id: str, entries: list[registers.Entry]) -> None:
    if not entries:
        db.execute("DELETE FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id])
        return
    db.execute(
        "INSERT INTO memberships (group_id, ref_id, dots) VALUES (?, ?, ?) "
        "ON CONFLICT (group_id, ref_id) DO UPDATE SET dots = excluded.dots",
        [group_id, ref_id, dumps(entries)],
    )


def _remove_member_dots(db: sqlite_utils.Database, group_id: str, ref_id: str, seen: list[Any]) -> None:
    _store_member_dots(db, group_id, ref_id, registers.remove(_load_member_dots(db, group_id, ref_id), seen))


# --- attachments ------------------------------------------------------------------------------


def _load_attachment_state(db: sqlite_utils.Database, ref_id: str, name: str) -> list[registers.Entry]:
    row = db.execute("SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]).fetchone()
    return json.loads(row[0]) if row else []


def _store_attachment(db: sqlite_utils.Database, ref_id: str, name: str, entries: list[registers.Entry]) -> None:
    if not entries:
        db.execute("DELETE FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name])
        return
    resolved = registers.resolve(entries)
    manifest = resolved.value or {}
    db.execute(
        "INSERT INTO attachments (ref_id, name, size, sha256, conflict, state) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (ref_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
        "conflict = excluded.conflict, state = excluded.state",
        [ref_id, name, manifest.get("size"), manifest.get("sha256"), 1 if resolved.conflict else 0, dumps(entries)],
    )
