"""A library on one machine: the folder, its SQLite file, its device key and attachment files.

`Library` is the face every other part uses (CLI, formats, sync, the network). Behind it the
work is done in rooms by area, one small class each over the same open library:

    library.refs         references.py   add, edit, find by id prefix, list, count, search
    library.groups       groups.py       groups, smart groups and memberships; Sync Conflicts
    library.sets         group_sets.py   group sets (named folders of groups)
    library.trash        trash.py        into the trash, back out, emptying it for good
    library.attachments  attachments.py  attach, list, export, remove; files edited in place
    library.conflicts    conflicts.py    every version of what is in conflict; resolving
    library.members      members.py      the member devices; introducing and removing one

This module is the library as a whole: creating and opening it, its `meta` (name, ids, the
clock), its log as a whole (`log_entries`, `ingest`), and `writing()`, the one write transaction
in which every mutation reads the current state, asks the engine for the operation, appends it
to this device's change log and applies it (store/apply.py): nothing changes without being
logged, nothing is logged without being applied. The rooms reach each other through the library
(`self.library.refs.resolve(...)`), so each module holds one area and no room imports another's
class. Where the files are in the folder is store/folder.py; the records handed out, records.py.

Why rooms behind a face rather than one class: the single class had grown to 1,060 lines and 45
public methods over six areas, and a reader looking for how the trash works read past groups and
conflicts to find it. Why a small class per room rather than functions taking the library: a
room keeps what it must remember (the attachments room, the files grown too large to sync), and
`library.refs.add(...)` names its area where it is called. Why the face keeps the old method
names (`add_reference`, `list_groups`, ...): the CLI, the tests and the sync and relay code call
them. They are a table at the end of the class, each name the room's own bound method (`_room`),
so arguments, defaults and types are the room's and nothing is written twice; new code calls the
rooms.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from p2psync.crypto.identity import DeviceIdentity
from p2psync.engine import clock, ops
from p2psync.engine.canonical import dumps
from p2psync.errors import FileProblem, InvalidValue, LibraryCorrupt, LibraryExists, LibraryNotFound
from p2psync.model.devices import library_id_for, short_id
from p2psync.model.groups import validate_library_name
from p2psync.model.ids import new_id
from p2psync.store import folder, logtext, schema, search_build
from p2psync.store.apply import apply_entry, load_library_name
from p2psync.store.db import Database, connect, write_transaction
from p2psync.store.files import fsync_dir, keep_private
from p2psync.store.folder import ATTACHMENTS_DIR, DB_FILE, KEY_FILE
from p2psync.store.library.attachments import ATTACHMENT_FIELD, Attachments
from p2psync.store.library.conflicts import Conflicts
from p2psync.store.library.group_sets import GroupSets
from p2psync.store.library.groups import Groups
from p2psync.store.library.members import Members, device_add_op, device_name
from p2psync.store.library.records import Device, GroupName, ReferenceDetail, ReferenceRow, iso
from p2psync.store.library.references import BATCH, IN_CONFLICT, References
from p2psync.store.library.trash import Trash

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "ATTACHMENTS_DIR",
    "ATTACHMENT_FIELD",
    "BATCH",
    "DB_FILE",
    "IN_CONFLICT",
    "KEY_FILE",
    "Device",
    "GroupName",
    "Library",
    "ReferenceDetail",
    "ReferenceRow",
    "Writer",
    "device_add_op",
    "device_name",
    "iso",
]


@dataclass
class Writer:
    """One open write transaction: appends this device's log entries and applies them."""

    library: Library
    seq: int
    ts: int
    entries: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)

    def log(self, op: dict[str, Any], checked: bool = False) -> None:
        """Append op to this device's log and apply it. `checked`: its values were just validated."""
        if not checked:
            ops.check(op)
        text = dumps(op)
        if len(text) > ops.MAX_OP_BYTES // 4 and len(text.encode("utf-8")) > ops.MAX_OP_BYTES:
            raise InvalidValue("This change is too large to sync (over 3 MB of text in one reference); shorten it.")
        self.seq += 1
        self.ts = clock.tick(self.ts)
        db = self.library.db
        db.execute(
            "INSERT INTO changelog (device, seq, ts, op) VALUES (?, ?, ?, ?)",
            [self.library.device_id, self.seq, self.ts, text],
        )
        apply_entry(db, self.library.device_id, self.seq, self.ts, op)

    def new_id(self) -> str:
        """The id of an object this transaction creates. Drawn here, the one place new references and
        groups get theirs, so that a test can fix it (tests/test_prepare.py patches `new_id`)."""
        return new_id()


class _room(Generic[P, R]):  # lowercase, like property: it reads as one in the table below
    """An old method name of Library, answered by the same method of one of its rooms: the room's
    bound method itself, so arguments, defaults and types are the room's, with nothing between."""

    def __init__(self, room: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.room, self.name = room, method.__name__

    def __get__(self, library: Library, owner: type[Library]) -> Callable[P, R]:
        method: Callable[P, R] = getattr(getattr(library, self.room), self.name)
        return method


class Library:
    def __init__(self, path: Path, db: Database) -> None:
        self.path = path
        self.db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "library_id" not in meta or "device_id" not in meta:
            raise LibraryCorrupt(f"The library at {path} is missing its identity; restore it from a backup.")
        self.device_id: str = meta["device_id"]
        self.refs = References(self)
        self.groups = Groups(self)
        self.sets = GroupSets(self)
        self.trash = Trash(self)
        self.attachments = Attachments(self)
        self.conflicts = Conflicts(self)
        self.members = Members(self)
        folder.upgrade_layout(self)

    # --- opening and creating -----------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, name: str | None = None, found: bool = True, library_id: str | None = None) -> Library:
        """A new library in folder `path` with a new device key.

        found=False makes an empty store that founds nothing (no membership entry): for a library
        that receives its whole log from elsewhere (a replay, or joining by pairing, which gives
        the library_id to join). A founded library's id is derived from this device's key.
        """
        path = Path(path)
        if (path / DB_FILE).exists():
            raise LibraryExists(f"A library already exists at {path}; use it, or choose another --library folder.")
        if path.exists() and not path.is_dir():
            raise FileProblem(f"{path} is a file; give --library a folder.")
        path.mkdir(parents=True, exist_ok=True)
        keep_private(path)
        identity = DeviceIdentity.generate()
        identity.save(path / KEY_FILE)
        (path / ATTACHMENTS_DIR).mkdir(exist_ok=True)
        db = connect(path / DB_FILE)
        schema.migrate(db)
        now = clock.now_ms()
        with write_transaction(db):
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('library_id', ?), ('device_id', ?), ('name', ?), "
                "('created', ?), ('clock', ?)",
                [
                    library_id or library_id_for(identity.public_bytes) if found else library_id or new_id(),
                    identity.device_id,
                    name or path.resolve().name,
                    str(now),
                    str(now),
                ],
            )
        fsync_dir(path)
        library = cls(path, db)
        if found:
            with library.writing() as writer:  # the founding device introduces itself
                writer.log(device_add_op(identity, device_name(), None, None))
        return library

    @classmethod
    def open(cls, path: Path) -> Library:
        path = Path(path)
        if not (path / DB_FILE).is_file():
            raise LibraryNotFound(
                f"No library at {path}; create one with 'p2psync init' or point --library at an existing one."
            )
        keep_private(path)  # earlier versions made it 0755, its files 0644
        keep_private(path / KEY_FILE)
        db = connect(path / DB_FILE)
        schema.migrate(db)
        return cls(path, db)

    def close(self) -> None:
        search_build.close(self.db, self.path / DB_FILE)  # a first sync's index, built meanwhile
        with contextlib.suppress(sqlite3.Error):
            self.db.conn.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> DeviceIdentity:
        return DeviceIdentity.load(self.path / KEY_FILE)

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[Writer]:
        """A write transaction in which operations can be logged and applied."""
        with write_transaction(self.db):
            row = self.db.execute("SELECT max(seq) FROM changelog WHERE device = ?", [self.device_id]).fetchone()
            last_ts = int(self._meta("clock") or 0)
            writer = Writer(self, row[0] or 0, last_ts)
            yield writer
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'clock'", [str(writer.ts)])

    def advance_clock(self, ts: int) -> None:
        """Our next timestamps come after everything we have seen (hybrid logical clock)."""
        self.db.execute("UPDATE meta SET value = max(CAST(value AS INTEGER), ?) WHERE key = 'clock'", [ts])

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database (SQLite's data_version):
        how the daemon notices a change made by a CLI command."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    @property
    def name(self) -> str:
        """The library's name: the replicated one once a device has renamed the library
        (library.name), else the one given at init (or taken when joining by pairing)."""
        row = self.db.execute("SELECT name FROM library_name WHERE id = 1").fetchone()
        return str(row[0]) if row else self._meta("name") or ""

    def rename(self, name: str) -> str:
        """Rename the library on every device it syncs with (the newest rename wins); return the
        name in its normal form."""
        name = validate_library_name(name)
        with self.writing() as writer:
            if name != self.name or self.db.execute("SELECT 1 FROM library_name").fetchone() is None:
                writer.log(ops.library_rename(name, load_library_name(self.db)))
        return name

    @property
    def library_id(self) -> str:
        """Read each time: pairing can turn this library into a replica of another one while a
        daemon holds it open (the device key, and so device_id, never changes)."""
        return self._meta("library_id") or ""

    # --- the library as a whole ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        count = lambda sql: int(self.db.execute(sql).fetchone()[0])  # noqa: E731
        return {
            "name": self.name,
            "path": str(self.path.resolve()),
            "library_id": self.library_id,
            "device_id": self.device_id,
            "device_short_id": short_id(self.device_id),
            "created": iso(int(self._meta("created") or 0)),
            "references": count("SELECT count(*) FROM refs WHERE deleted = 0 AND trashed = 0"),
            "trash": count("SELECT count(*) FROM refs WHERE deleted = 0 AND trashed = 1"),
            "groups": count("SELECT count(*) FROM groups WHERE name IS NOT NULL"),
            "group_sets": count("SELECT count(*) FROM group_sets WHERE name IS NOT NULL"),
            "attachments": count(
                "SELECT count(*) FROM attachments a JOIN refs r ON r.id = a.ref_id "
                "WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
            ),
            "attachment_bytes": count(
                "SELECT coalesce(sum(a.size), 0) FROM attachments a JOIN refs r ON r.id = a.ref_id "
                "WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
            ),
            "conflicts": self.conflicts.count(),
            "changes": count("SELECT count(*) FROM changelog"),
            "schema_version": schema.SCHEMA_VERSION,
        }

    def log_entries(self) -> Iterator[tuple[str, int, int, dict[str, Any]]]:
        """Every change-log entry in the order this library applied them (which respects causality:
        nothing is applied before what it depends on)."""
        cursor = self.db.conn.cursor()
        cursor.execute(f"SELECT c.device, c.seq, c.ts, {logtext.OP_TEXT} FROM {logtext.LOG_ROWS} ORDER BY c.num")
        for device, seq, ts, op in cursor:
            yield device, seq, ts, json.loads(op)

    def ingest(self, entries: Iterable[tuple[str, int, int, dict[str, Any]]], batch: int = 2000) -> int:
        """Append entries from another log (a replay, or a peer's) and apply them; return how many
        were new. Entries already present are skipped, so ingesting twice changes nothing.

        Each batch is one transaction. The sync engine adds signature, chain and causality checks
        in front of this; here every operation is still schema-checked before it is applied.
        """
        added = 0
        pending: list[tuple[str, int, int, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal added
            with write_transaction(self.db):
                for device, seq, ts, op in pending:
                    ops.check(op)
                    cursor = self.db.execute(
                        "INSERT OR IGNORE INTO changelog (device, seq, ts, op) VALUES (?, ?, ?, ?)",
                        [device, seq, ts, dumps(op)],
                    )
                    if cursor.rowcount:
                        apply_entry(self.db, device, seq, ts, op)
                        self.advance_clock(ts)
                        added += 1
            pending.clear()

        for entry in entries:
            pending.append(entry)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return added

    # --- the old names, each one room's method: the CLI, the tests and the sync code call them ---

    add_reference = _room("refs", References.add)
    add_references = _room("refs", References.add_many)
    edit_reference = _room("refs", References.edit)
    resolve_ref = _room("refs", References.resolve)
    count_references = _room("refs", References.count)
    search_backlog = _room("refs", References.search_backlog)
    catch_up_search = _room("refs", References.catch_up_search)
    trash_reference = _room("trash", Trash.put)
    restore_reference = _room("trash", Trash.restore)
    empty_trash = _room("trash", Trash.empty)
    create_group = _room("groups", Groups.create)
    rename_group = _room("groups", Groups.rename)
    delete_group = _room("groups", Groups.delete)
    add_to_group = _room("groups", Groups.add_refs)
    remove_from_group = _room("groups", Groups.remove_refs)
    list_groups = _room("groups", Groups.listing)
    reference_versions = _room("conflicts", Conflicts.versions)
    list_conflicts = _room("conflicts", Conflicts.listing)
    resolve_conflict = _room("conflicts", Conflicts.resolve)
    attachment_file = _room("attachments", Attachments.file)
    attach = _room("attachments", Attachments.attach)
    list_attachments = _room("attachments", Attachments.listing)
    attachment_path = _room("attachments", Attachments.path)
    export_attachment = _room("attachments", Attachments.export)
    remove_attachment = _room("attachments", Attachments.remove)
    record_local_edits = _room("attachments", Attachments.record_local_edits)
    scan_attachments = _room("attachments", Attachments.scan)
    _record_file = _room("attachments", Attachments.record_file)  # (tests/test_reserved_names.py)
    add_device = _room("members", Members.add)

    # The records as the dicts their old callers read by key (the file formats map a reference's
    # fields by name; the relay and the network read devices); the CLI reads the rooms' records.

    def list_references(
        self, trashed: bool = False, group: str | None = None, limit: int | None = None, offset: int = 0
    ) -> Iterator[dict[str, Any]]:
        return (row.as_dict() for row in self.refs.listing(trashed, group, limit, offset))

    def search(self, text: str, limit: int | None = None, trashed: bool = False) -> Iterator[dict[str, Any]]:
        return (row.as_dict() for row in self.refs.search(text, limit, trashed))

    def get_reference(self, ref: str) -> dict[str, Any]:
        return self.refs.get(ref).as_dict()

    def find_group(self, name_or_id: str) -> dict[str, str]:
        return self.groups.find(name_or_id).as_dict()

    def devices(self) -> list[dict[str, Any]]:
        return [device.as_dict() for device in self.members.listing()]

    def revoke_device(self, device: str) -> dict[str, Any]:
        return self.members.revoke(device).as_dict()
