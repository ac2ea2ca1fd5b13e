"""Applying one change-log entry to the replicated tables.

This is the only code that writes refs, groups, group sets, memberships, attachments, the
library's name and tombstones. Local
edits, replays of the log and (with the sync engine) change sets from peers all come through
apply_entry, so the same entries give the same tables whatever their origin. What each operation
does is the engine's (engine/effects.py, with the merge rules of engine/registers.py and merge.py);
this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from p2psync.engine import effects, merge, ops, registers
from p2psync.engine.canonical import dumps, loads
from p2psync.model.fields import FIELDS, LIST, PEOPLE
from p2psync.model.people import display_person
from p2psync.store import logtext, search_build
from p2psync.store.db import Database, write_transaction

State = dict[str, list[registers.Entry]]
SEARCH_COLUMNS = ("title", "authors", "abstract", "keywords", "notes")


def apply_entry(
    db: Database,
    device: str,
    seq: int,
    ts: int,
    op: dict[str, Any],
    absent: set[str] | None = None,
    defer_index: bool = False,
) -> None:
    """Apply one operation (already checked) with dot (device, seq) and timestamp ts: the engine
    says what it writes (engine/effects.py), this stores it.

    absent: ids known not to be in the refs table yet (a hint from bulk work that saves a lookup
    per new reference); an id is taken out of it once its reference exists.
    defer_index: a new reference goes to the search backlog instead of the index (bulk receive).
    """
    for effect in effects.effects(op, (device, seq), ts):
        match effect:
            case effects.RefWrite(ref_id, change, tombstone):
                if absent is not None and ref_id in absent:
                    absent.discard(ref_id)  # the write creates the row
                    ref = StoredRef(ref_id, None, {}, {}, False)
                else:
                    ref = load_ref(db, ref_id)
                _store_ref(db, ref, change(ref.state), defer_index)
                if tombstone:
                    db.execute("INSERT OR IGNORE INTO tombstones (kind, id) VALUES ('ref', ?)", [ref_id])
            case effects.GroupWrite(group_id, change, tombstone):
                _store_group(db, group_id, change(_load_group_state(db, group_id)))
                if tombstone:
                    db.execute("INSERT OR IGNORE INTO tombstones (kind, id) VALUES ('group', ?)", [group_id])
            case effects.MemberWrite(group_id, ref_id, change):
                _store_member_dots(db, group_id, ref_id, change(_load_member_dots(db, group_id, ref_id)))
            case effects.AttachmentWrite(ref_id, name, change):
                _store_attachment(db, ref_id, name, change(_load_attachment_state(db, ref_id, name)))
            case effects.DeviceIntroduced():
                db.execute(
                    "INSERT INTO devices (id, public_key, name, introducer, signature, seq, author) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                    "introducer = excluded.introducer, signature = excluded.signature, seq = excluded.seq, "
                    "author = excluded.author WHERE (excluded.author, excluded.seq) < (devices.author, devices.seq)",
                    [
                        effect.device,
                        effect.key,
                        effect.name,
                        effect.introducer,
                        effect.signature,
                        effect.seq,
                        effect.author,
                    ],
                )
            case effects.DeviceRevoked(revoked, upto):
                db.execute(
                    "INSERT INTO revocations (device, upto) VALUES (?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET upto = min(upto, excluded.upto)",
                    [revoked, upto],
                )
            case effects.GroupSetWrite(set_id, change, tombstone):
                _store_group_set(db, set_id, change(_load_group_set_state(db, set_id)))
                if tombstone:
                    db.execute("INSERT OR IGNORE INTO tombstones (kind, id) VALUES ('groupset', ?)", [set_id])
            case effects.LibraryNamed(change):
                _store_library_name(db, change(load_library_name(db)))
            case effects.DeviceNamed(named, name, name_seq):
                db.execute(
                    "INSERT INTO device_names (device, name, seq) VALUES (?, ?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET name = excluded.name, seq = excluded.seq WHERE excluded.seq > device_names.seq",
                    [named, name, name_seq],
                )


# --- references ---------------------------------------------------------------------------------


@dataclass
class StoredRef:
    id: str
    num: int | None  # None: not in the table yet
    data: dict[str, Any]
    state: State
    deleted: bool  # permanently deleted (kept as a mark; not in the search index)
    pending: bool = False  # in the search backlog: the index will be written from its latest data
    origin: int | None = None  # the log row whose fields this row's data still is (store/logtext.py)

    @property
    def indexed(self) -> bool:
        """Whether the search index holds a row for it now."""
        return self.num is not None and not self.deleted and not self.pending


def load_ref(db: Database, ref_id: str) -> StoredRef:
    row = db.execute(
        "SELECT r.num, r.data, r.state, r.deleted, b.num IS NOT NULL, r.origin FROM refs r "
        "LEFT JOIN search_backlog b ON b.num = r.num WHERE r.id = ?",
        [ref_id],
    ).fetchone()
    if row is None:
        return StoredRef(ref_id, None, {}, {}, False)
    data = loads(row[1])
    state = registers.unpack(loads(row[2]), data)
    return StoredRef(ref_id, row[0], data, state, bool(row[3]), bool(row[4]), row[5])


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


def search_row(data: dict[str, Any]) -> list[str | None]:
    """The texts of SEARCH_COLUMNS that refs_fts indexes for a reference's data."""
    return [search_text(name, data.get(name)) for name in SEARCH_COLUMNS]


REF_COLUMNS = (
    "type",
    "title",
    "year",
    "first_author",
    "trashed",
    "conflict",
    "deleted",
    "added",
    "modified",
    "data",
    "state",
)
# [id, *REF_COLUMNS, origin]: origin is the log row kept only in this row (store/logtext.py), or None.
_INSERT_REF = f"INSERT INTO refs (id, {', '.join(REF_COLUMNS)}, origin) VALUES (?{', ?' * (len(REF_COLUMNS) + 1)})"
# The same, with the data given as UTF-8 bytes (a new reference's fields text, cut out of its
# change set's canonical body): SQLite takes them as the text they are, with no decoding into a
# Python str and encoding back (most library text is not ASCII).
_INSERT_NEW_REF = _INSERT_REF.replace(", ?, ?, ?)", ", CAST(? AS TEXT), ?, ?)")
assert REF_COLUMNS[-2:] == ("data", "state") and _INSERT_NEW_REF.count("CAST") == 1
_DATA = 1 + REF_COLUMNS.index("data")  # where a new_ref_row holds the fields text


def ref_columns(state: State) -> tuple[list[Any], dict[str, Any], bool]:
    """The refs row (REF_COLUMNS, in order) for a reference's registers, the provisional values
    (the row's data) and whether it is deleted."""
    view = merge.reference_view(state)
    data = view.data
    if merge.DELETED in state:  # kept beside the data so that pack/unpack stay exact
        data = {**data, merge.DELETED: registers.resolve(state[merge.DELETED]).value}
    modified = max(e[2] for entries in state.values() for e in entries)
    return _columns(data, view.conflicts, view.deleted, modified, registers.pack(state)), data, view.deleted


def _columns(
    data: dict[str, Any],
    conflicts: list[str],
    deleted: bool,
    modified: int,
    packed: Any,
    data_text: str | bytes | None = None,
) -> list[Any]:
    authors = data.get("authors") or data.get("editors") or []
    return [
        data.get("type"),
        data.get("title"),
        data.get("year"),
        display_person(authors[0]) if authors else None,
        1 if data.get("trashed") else 0,
        1 if conflicts else 0,
        1 if deleted else 0,
        data.get("added"),
        modified,
        dumps(data) if data_text is None else data_text,
        dumps(packed),
    ]


def is_plain_new_ref(op: dict[str, Any], absent: set[str]) -> bool:
    """A ref.put that creates a reference from nothing (the bulk of a first sync): its row can be
    written by new_ref_row without the register machinery."""
    return op["op"] == ops.REF_PUT and op["ref"] in absent and not op["seen"] and merge.DELETED not in op["fields"]


def new_ref_row(
    device: str,
    seq: int,
    ts: int,
    op: dict[str, Any],
    data_text: bytes | None = None,
    origin: int | None = None,
) -> list[Any]:
    """[id, *REF_COLUMNS, origin] for a plain new reference: exactly what ref_columns gives for the
    state that op creates (one entry per field, all with the dot (device, seq); tests hold them
    equal). data_text, canonical(op["fields"]) in UTF-8 when no field is null, saves encoding the
    data again (insert_new_refs writes it as text); origin: the log row that keeps its text only
    here (store/logtext.py)."""
    fields = op["fields"]
    data = fields  # read only
    if None in fields.values():
        data = {name: value for name, value in fields.items() if value is not None}
        data_text = None  # a field cleared to null is not in the data
    packed = {"d": [[device, seq, ts]], "r": {name: [0] for name in fields}}
    return [op["ref"], *_columns(data, [], False, ts, packed, data_text), origin]


def insert_new_refs(db: Database, rows: list[list[Any]]) -> None:
    """Write plain new references (new_ref_row) in one statement and queue them for the search
    index (and hand them to the index being built beside a first sync: store/search_build.py)."""
    db.conn.executemany(_INSERT_NEW_REF, rows)
    # New rows get max(num) + 1 each, so the batch holds the last len(rows) numbers.
    last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
    first = last - len(rows) + 1
    db.conn.executemany("INSERT INTO search_backlog (num) VALUES (?)", [(n,) for n in range(first, last + 1)])
    search_build.add(db, first, [row[_DATA] for row in rows])


def _store_ref(db: Database, ref: StoredRef, state: State, defer_index: bool = False) -> None:
    state = {name: entries for name, entries in state.items() if entries}
    if ref.origin is not None:  # the row is about to change: its log entry goes back into the log
        logtext.restore(db, ref.origin)
    if ref.num is not None and ref.indexed:
        # The index is contentless: removing a row means repeating exactly what was indexed.
        db.execute(
            "INSERT INTO refs_fts (refs_fts, rowid, title, authors, abstract, keywords, notes) "
            "VALUES ('delete', ?, ?, ?, ?, ?, ?)",
            [ref.num, *search_row(ref.data)],
        )
    if not state:
        db.execute("DELETE FROM refs WHERE id = ?", [ref.id])
        if ref.pending:
            db.execute("DELETE FROM search_backlog WHERE num = ?", [ref.num])
        return
    values, data, deleted = ref_columns(state)
    if ref.num is not None:
        num = ref.num
        db.execute(
            "UPDATE refs SET " + ", ".join(f"{c} = ?" for c in REF_COLUMNS) + ", origin = NULL WHERE num = ?",
            [*values, num],
        )
    else:
        num = int(db.execute(_INSERT_REF, [ref.id, *values, None]).lastrowid or 0)
    if ref.pending:
        return  # the backlog indexes whatever the reference holds when it catches up
    if ref.num is None and defer_index:
        db.execute("INSERT OR IGNORE INTO search_backlog (num) VALUES (?)", [num])
    elif not deleted:
        db.execute(
            "INSERT INTO refs_fts (rowid, title, authors, abstract, keywords, notes) VALUES (?, ?, ?, ?, ?, ?)",
            [num, *search_row(data)],
        )


def index_backlog(db: Database, batch: int = 2_000) -> Iterator[int]:
    """Write the search-index rows of references in the backlog, a batch per transaction (so a
    writer in another process waits at most one batch); yields how many each batch did."""
    while True:
        with write_transaction(db):
            rows = db.execute(
                "SELECT b.num, r.num, r.data, r.deleted FROM search_backlog b LEFT JOIN refs r ON r.num = b.num "
                "ORDER BY b.num LIMIT ?",
                [batch],
            ).fetchall()
            db.conn.executemany(
                "INSERT INTO refs_fts (rowid, title, authors, abstract, keywords, notes) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (num, *search_row(loads(data)))
                    for _id, num, data, deleted in rows
                    if num is not None and not deleted
                ],
            )
            db.conn.executemany("DELETE FROM search_backlog WHERE num = ?", [(row[0],) for row in rows])
        if not rows:
            return
        yield len(rows)


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


def _load_group_state(db: Database, group_id: str) -> State:
    row = db.execute("SELECT state FROM groups WHERE id = ?", [group_id]).fetchone()
    return loads(row[0]) if row else {}


def _store_group(db: Database, group_id: str, state: State) -> None:
    state = {name: entries for name, entries in state.items() if entries}
    if not state:
        db.execute("DELETE FROM groups WHERE id = ?", [group_id])
        return
    data, conflicts = materialize(state)
    db.execute(
        "INSERT INTO groups (id, name, conflict, state, query, set_id) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, conflict = excluded.conflict, state = excluded.state, "
        "query = excluded.query, set_id = excluded.set_id",
        [group_id, data.get("name"), 1 if conflicts else 0, dumps(state), data.get("query"), data.get("set")],
    )


def _load_group_set_state(db: Database, set_id: str) -> State:
    row = db.execute("SELECT state FROM group_sets WHERE id = ?", [set_id]).fetchone()
    return loads(row[0]) if row else {}


def _store_group_set(db: Database, set_id: str, state: State) -> None:
    state = {name: entries for name, entries in state.items() if entries}
    if not state:
        db.execute("DELETE FROM group_sets WHERE id = ?", [set_id])
        return
    data, conflicts = materialize(state)
    db.execute(
        "INSERT INTO group_sets (id, name, conflict, state) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, conflict = excluded.conflict, state = excluded.state",
        [set_id, data.get("name"), 1 if conflicts else 0, dumps(state)],
    )


# --- the library's name -----------------------------------------------------------------------


def load_library_name(db: Database) -> list[registers.Entry]:
    """The entries of the library's name register (none until a device renames the library)."""
    row = db.execute("SELECT state FROM library_name WHERE id = 1").fetchone()
    entries: list[registers.Entry] = loads(row[0]) if row else []
    return entries


def _store_library_name(db: Database, entries: list[registers.Entry]) -> None:
    name = registers.resolve(entries).value  # concurrent names: the newest (ts, device, seq) shows
    db.execute(
        "INSERT INTO library_name (id, name, state) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, state = excluded.state",
        [name, dumps(entries)],
    )


def _load_member_dots(db: Database, group_id: str, ref_id: str) -> list[registers.Entry]:
    row = db.execute("SELECT dots FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id]).fetchone()
    return loads(row[0]) if row else []


def _store_member_dots(db: Database, group_id: str, ref_id: str, entries: list[registers.Entry]) -> None:
    if not entries:
        db.execute("DELETE FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id])
        return
    db.execute(
        "INSERT INTO memberships (group_id, ref_id, dots) VALUES (?, ?, ?) "
        "ON CONFLICT (group_id, ref_id) DO UPDATE SET dots = excluded.dots",
        [group_id, ref_id, dumps(entries)],
    )


# --- attachments ------------------------------------------------------------------------------


def _load_attachment_state(db: Database, ref_id: str, name: str) -> list[registers.Entry]:
    row = db.execute("SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]).fetchone()
    return loads(row[0]) if row else []


def _store_attachment(db: Database, ref_id: str, name: str, entries: list[registers.Entry]) -> None:
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
