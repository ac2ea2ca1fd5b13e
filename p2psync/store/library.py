"""A library on one machine: the folder, its SQLite file, its device key and attachment files.

Library is the Python API every other part uses (CLI, formats, sync). Each mutation runs in one
write transaction that reads the current state, asks the engine for the operation, appends it to
this device's change log and applies it (store/apply.py): nothing changes without being logged,
nothing is logged without being applied.

Folder layout (the folder 0700, its files 0600: they hold the keys; fixed when opened):
    library.sqlite3          the database (WAL mode: also -wal and -shm files beside it)
    device.key               this device's Ed25519 private key
    attachments/REF/NAME     attachment files, under their original names
    attachments/.p2psync/    p2psync's own files: partial fetches, files being attached and a
                             conflict's other versions (store/transfers.py)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from p2psync.crypto.identity import DeviceIdentity, introduction_message
from p2psync.engine import clock, merge, ops, registers
from p2psync.engine.canonical import dumps
from p2psync.errors import (
    AmbiguousId,
    Conflict,
    FileProblem,
    InvalidValue,
    LibraryCorrupt,
    LibraryExists,
    LibraryNotFound,
    UnknownAttachment,
    UnknownDevice,
    UnknownGroup,
    UnknownReference,
)
from p2psync.model import fields as catalogue
from p2psync.model.attachments import validate_name
from p2psync.model.chunking import manifest_of
from p2psync.model.devices import library_id_for, short_id
from p2psync.model.groups import SYNC_CONFLICTS, SYNC_CONFLICTS_ID, validate_group_name
from p2psync.model.ids import is_id_prefix, new_id
from p2psync.store import logtext, schema, transfers
from p2psync.store.apply import apply_entry, index_backlog, load_ref
from p2psync.store.db import connect, write_transaction
from p2psync.store.files import copy_atomic, fsync_dir, keep_private

DB_FILE = "library.sqlite3"
KEY_FILE = "device.key"
ATTACHMENTS_DIR = "attachments"
ATTACHMENT_FIELD = "attachment:"  # how a conflicted attachment is named among a reference's conflicts
# A reference is in conflict when a field or one of its attachments is (the "Sync Conflicts" group).
IN_CONFLICT = "(conflict = 1 OR id IN (SELECT ref_id FROM attachments WHERE conflict = 1))"
BATCH = 500  # references per transaction in bulk work, so other writers wait well under a second


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class Library:
    def __init__(self, path: Path, db: sqlite_utils.Database) -> None:
        self.path = path
        self.db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "library_id" not in meta or "device_id" not in meta:
            raise LibraryCorrupt(f"The library at {path} is missing its identity; restore it from a backup.")
        self.device_id: str = meta["device_id"]
        # Files edited in place past MAX_CHUNKS (size, mtime when seen), so a scan skips them until they change.
        self._unsyncable: dict[tuple[str, str], tuple[int, int]] = {}
        transfers.upgrade_layout(self)

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

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    @property
    def name(self) -> str:
        return self._meta("name") or ""

    @property
    def library_id(self) -> str:
        """Read each time: pairing can turn this library into a replica of another one while a
        daemon holds it open (the device key, and so device_id, never changes)."""
        return self._meta("library_id") or ""

    # --- references ---------------------------------------------------------------------------

    def add_reference(self, values: dict[str, Any]) -> str:
        """Add one reference; return its id. Values are validated against the field catalogue."""
        return self.add_references([values])[0]

    def add_references(
        self, records: Iterable[dict[str, Any]], progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Add many references, BATCH per transaction; return their ids in order.

        Every record is validated before its batch starts, so a bad record stops the work
        with nothing of its batch written.
        """
        ids: list[str] = []
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(self._new_reference_values(record))
            if len(batch) >= BATCH:
                ids.extend(self._insert_batch(batch))
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            ids.extend(self._insert_batch(batch))
            if progress:
                progress(len(batch))
        return ids

    @staticmethod
    def _new_reference_values(record: dict[str, Any]) -> dict[str, Any]:
        values = catalogue.validate_fields({k: v for k, v in record.items()})
        values = {k: v for k, v in values.items() if v is not None}
        values.setdefault("type", catalogue.DEFAULT_TYPE)
        return values

    def _insert_batch(self, batch: list[dict[str, Any]]) -> list[str]:
        ids = []
        with self.writing() as writer:
            for values in batch:
                ref_id = new_id()
                # "added" is the entry's own timestamp: unique and increasing per device.
                added = clock.tick(writer.ts)
                op = {"op": ops.REF_PUT, "ref": ref_id, "fields": {**values, "added": added}, "seen": {}}
                writer.log(op, checked=True)
                ids.append(ref_id)
        return ids

    def edit_reference(self, ref: str, changes: dict[str, Any]) -> bool:
        """Set (or, with None, clear) fields of a reference; return whether anything changed."""
        changes = catalogue.validate_fields(changes)
        with self.writing() as writer:
            ref_id = self.resolve_ref(ref)
            op = ops.put_fields(ops.REF_PUT, "ref", ref_id, self._ref_state(ref_id), changes)
            if op is None:
                return False
            writer.log(op)
        return True

    def _ref_state(self, ref_id: str) -> ops.State:
        ref = load_ref(self.db, ref_id)
        if ref.num is None or ref.deleted:
            raise UnknownReference(f"No reference with id {ref_id}; list them with 'p2psync ref list'.")
        return ref.state

    def resolve_ref(self, ref: str) -> str:
        """The full id of the reference whose id is or starts with `ref`."""
        ref = ref.strip().lower()
        if not is_id_prefix(ref):
            raise UnknownReference(
                f"{ref!r} is not a reference id; ids look like 'k3x9q2...' (see 'p2psync ref list')."
            )
        rows = self.db.execute(
            "SELECT id FROM refs WHERE id >= ? AND id < ? AND deleted = 0 LIMIT 2", [ref, ref + "~"]
        ).fetchall()
        if not rows:
            raise UnknownReference(f"No reference with id {ref}; list them with 'p2psync ref list'.")
        if len(rows) > 1:
            raise AmbiguousId(f"More than one reference id starts with {ref!r}; type more of the id.")
        return str(rows[0][0])

    def get_reference(self, ref: str) -> dict[str, Any]:
        ref_id = self.resolve_ref(ref)
        [record] = self._rows("SELECT * FROM refs WHERE id = ?", [ref_id])
        record["groups"] = [
            {"id": g, "name": n}
            for g, n in self.db.execute(
                "SELECT g.id, g.name FROM memberships m JOIN groups g ON g.id = m.group_id "
                "WHERE m.ref_id = ? ORDER BY g.name, g.id",
                [ref_id],
            )
        ]
        conflicts = [*record.get("conflicts", []), *self._attachment_conflicts(ref_id)]
        if conflicts:
            record["conflicts"] = conflicts
            record["groups"].insert(0, {"id": SYNC_CONFLICTS_ID, "name": SYNC_CONFLICTS})
        record["attachments"] = self.list_attachments(ref_id, scan=False)
        return record

    def reference_versions(self, ref: str) -> dict[str, list[dict[str, Any]]]:
        """Every version of every field in conflict, oldest first (for 'conflicts show').

        The pseudo-field "deleted" lists who deleted the reference and who changed it meanwhile.
        """
        ref_id = self.resolve_ref(ref)
        state = self._ref_state(ref_id)
        names = {d["device_id"]: d["name"] for d in self.devices()}

        def version(device: str, seq: int, ts: int, value: Any) -> dict[str, Any]:
            return {
                "device": device,
                "device_name": names.get(device, device[:7]),
                "seq": seq,
                "time": iso(ts),
                "value": value,
                "this_device": device == self.device_id,
            }

        out: dict[str, list[dict[str, Any]]] = {}
        for name in merge.reference_view(state).conflicts:
            if name == merge.DELETED:
                out[name] = [version(e[0], e[1], e[2], True) for e in state[name] if e[3] is not None]
                out[name] += [
                    version(*dot, False) for dot in sorted(_uncovered_dots(state), key=lambda d: (d[2], d[0], d[1]))
                ]
            else:
                entries = sorted(state[name], key=lambda e: (e[2], e[0], e[1]))
                out[name] = [version(e[0], e[1], e[2], e[3]) for e in entries]
        for name, entries in self._attachment_conflicts(ref_id).items():
            shown = registers.resolve(entries).value
            out[name] = [
                version(e[0], e[1], e[2], self._version_file(ref_id, name, e[3], shown))
                for e in sorted(entries, key=lambda e: (e[2], e[0], e[1]))
            ]
        return out

    def _version_file(self, ref_id: str, field: str, manifest: Any, shown: Any) -> dict[str, Any] | None:
        """One version of a conflicted attachment: its size, hash and where its file is (if here)."""
        if not isinstance(manifest, dict):
            return None  # this version removed the attachment
        name = field[len(ATTACHMENT_FIELD) :]
        if isinstance(shown, dict) and shown["sha256"] == manifest["sha256"]:
            path = self.attachment_file(ref_id, name)
            here = bool(
                self.db.execute(
                    "SELECT 1 FROM attachment_files WHERE ref_id = ? AND name = ? AND sha256 = ?",
                    [ref_id, name, manifest["sha256"]],
                ).fetchone()
            )
        else:
            path = transfers.version_path(self, ref_id, manifest["sha256"])
            here = path.is_file()
        return {"size": manifest["size"], "sha256": manifest["sha256"], "path": str(path), "present": here}

    def list_conflicts(self) -> list[dict[str, Any]]:
        rows = self._rows(f"SELECT * FROM refs WHERE {IN_CONFLICT} AND deleted = 0 ORDER BY added, id", [])
        return [
            {
                "id": r["id"],
                "title": r.get("title"),
                "fields": [*r.get("conflicts", []), *self._attachment_conflicts(r["id"])],
            }
            for r in rows
        ]

    def _attachment_conflicts(self, ref_id: str) -> dict[str, list[registers.Entry]]:
        """'attachment:NAME' -> the register's entries, for each attachment of ref_id in conflict."""
        rows = self.db.execute(
            "SELECT name, state FROM attachments WHERE ref_id = ? AND conflict = 1 ORDER BY name", [ref_id]
        ).fetchall()
        return {ATTACHMENT_FIELD + name: json.loads(state) for name, state in rows}

    def resolve_conflict(self, ref: str, keep: str | None = None, fields: dict[str, str] | None = None) -> list[str]:
        """Resolve a reference's conflicts by choosing versions; return the fields resolved.

        keep: "local" (this device's version), "remote" (the newest version from another device)
        or a device id (or its start) for every conflicted field; fields: the same choice per
        field, which wins over keep. A conflicted attachment is the field "attachment:NAME"; the
        versions not kept are deleted from disk. The resolution is an ordinary write that has
        seen every version, so every machine that receives it shows the same, conflict-free reference.
        """
        resolved = self._resolve_conflict(ref, keep, fields)
        if any(name.startswith(ATTACHMENT_FIELD) for name in resolved):
            transfers.reconcile(self)  # the kept version takes the attachment's path; the others go
        return resolved

    def _resolve_conflict(self, ref: str, keep: str | None, fields: dict[str, str] | None) -> list[str]:
        with self.writing() as writer:
            ref_id = self.resolve_ref(ref)
            state = self._ref_state(ref_id)
            files = self._attachment_conflicts(ref_id)
            conflicted = [*merge.reference_view(state).conflicts, *files]
            if not conflicted:
                raise Conflict(f"Reference {ref_id} has no sync conflict.")
            choices = {name: keep for name in conflicted} if keep else {}
            for name, choice in (fields or {}).items():
                if name not in conflicted:
                    raise InvalidValue(
                        f"Field {name!r} of {ref_id} is not in conflict; conflicted: {', '.join(conflicted)}."
                    )
                choices[name] = choice
            missing = [n for n in conflicted if n not in choices]
            if missing:
                raise InvalidValue(f"Say which version to keep for: {', '.join(missing)} (--keep or --field NAME=WHO).")
            done_files = sorted(n for n in choices if n in files)
            for field_name in done_files:
                chosen = self._choose(files[field_name], choices.pop(field_name), field_name)
                writer.log(
                    {
                        "op": ops.ATTACHMENT_PUT,
                        "ref": ref_id,
                        "name": field_name[len(ATTACHMENT_FIELD) :],
                        "value": chosen[3],
                        "seen": registers.dots(files[field_name]),
                    }
                )
            if not choices:  # only attachments were in conflict
                return done_files
            delete_choice = choices.pop(merge.DELETED, None)
            values = {name: self._choose(state[name], choice, name)[3] for name, choice in choices.items()}
            if delete_choice is not None:
                deleters = [e for e in state[merge.DELETED] if e[3] is not None]
                editors = [[*dot, None] for dot in _uncovered_dots(state)]
                if self._choose(deleters + editors, delete_choice, merge.DELETED)[3] is not None:
                    writer.log(self._delete_op(ref_id))  # the deleting side wins: delete, having seen all
                    return [*choices, merge.DELETED, *done_files]
                values[merge.DELETED] = None  # keep the reference: lift the deletes
            op = {
                "op": ops.REF_PUT,
                "ref": ref_id,
                "fields": values,
                "seen": {name: registers.dots(state[name]) for name in values},
            }
            writer.log(op)
        return sorted([*values, *done_files])

    def _choose(self, entries: list[registers.Entry], choice: str, name: str) -> registers.Entry:
        if choice == "local":
            picked = [e for e in entries if e[0] == self.device_id]
        elif choice == "remote":
            picked = [e for e in entries if e[0] != self.device_id]
        else:
            picked = [e for e in entries if e[0].startswith(choice.upper())]
        if not picked:
            who = {"local": "this device", "remote": "another device"}.get(choice, f"device {choice}")
            raise InvalidValue(f"No version of {name!r} comes from {who}; see 'p2psync conflicts show'.")
        return max(picked, key=lambda e: (e[2], e[0], e[1]))

    def count_references(self, trashed: bool = False, group: str | None = None) -> int:
        group_id = self.find_group(group)["id"] if group is not None else None
        if group_id == SYNC_CONFLICTS_ID:
            sql = f"SELECT count(*) FROM refs WHERE {IN_CONFLICT} AND deleted = 0 AND trashed = ?"
            return int(self.db.execute(sql, [int(trashed)]).fetchone()[0])
        if group_id is not None:
            row = self.db.execute(
                "SELECT count(*) FROM memberships m JOIN refs r ON r.id = m.ref_id "
                "WHERE m.group_id = ? AND r.trashed = ? AND r.deleted = 0",
                [group_id, int(trashed)],
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT count(*) FROM refs WHERE deleted = 0 AND trashed = ?", [int(trashed)]
            ).fetchone()
        return int(row[0])

    def list_references(
        self, trashed: bool = False, group: str | None = None, limit: int | None = None, offset: int = 0
    ) -> Iterator[dict[str, Any]]:
        """References oldest first, streamed from the database (flat memory at any size)."""
        params: list[Any] = [int(trashed)]
        group_id = self.find_group(group)["id"] if group is not None else None
        if group_id == SYNC_CONFLICTS_ID:
            sql = f"SELECT * FROM refs WHERE deleted = 0 AND trashed = ? AND {IN_CONFLICT} ORDER BY added, id"
        elif group_id is not None:
            sql = (
                "SELECT r.* FROM memberships m JOIN refs r ON r.id = m.ref_id "
                "WHERE r.deleted = 0 AND r.trashed = ? AND m.group_id = ? ORDER BY r.added, r.id"
            )
            params.append(group_id)
        else:
            sql = "SELECT * FROM refs WHERE deleted = 0 AND trashed = ? ORDER BY added, id"
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        yield from self._rows(sql, params)

    def search(self, text: str, limit: int | None = None, trashed: bool = False) -> Iterator[dict[str, Any]]:
        """Full-text search (FTS5) over title, authors, abstract, keywords and notes, best first.

        Every word must match; a word matches as a prefix ("neur" finds "neuron").
        """
        words = [w for w in text.split() if w.strip('"')]
        if not words:
            raise InvalidValue("Give some words to search for.")
        query = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
        for _ in self.catch_up_search():
            pass
        sql = (
            "SELECT r.* FROM refs_fts f JOIN refs r ON r.num = f.rowid "
            "WHERE refs_fts MATCH ? AND r.trashed = ? ORDER BY bm25(refs_fts), r.id LIMIT ?"
        )
        yield from self._rows(sql, [query, int(trashed), -1 if limit is None else limit])

    def search_backlog(self) -> int:
        """How many references are waiting to be indexed for search (after a large sync)."""
        return int(self.db.execute("SELECT count(*) FROM search_backlog").fetchone()[0])

    def catch_up_search(self) -> Iterator[int]:
        """Index the references a sync left for later; yields progress (references per batch).

        A bulk receive writes references without their search rows (indexing is most of the cost
        of storing a reference); searching first brings the index up to date.
        """
        yield from index_backlog(self.db)

    def _rows(self, sql: str, params: list[Any]) -> Iterator[dict[str, Any]]:
        cursor = self.db.conn.cursor()
        cursor.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        for row in cursor:
            yield _public(dict(zip(columns, row, strict=True)))

    # --- trash --------------------------------------------------------------------------------

    def trash_reference(self, ref: str) -> bool:
        with self.writing() as writer:
            ref_id = self.resolve_ref(ref)
            op = ops.put_fields(ops.REF_PUT, "ref", ref_id, self._ref_state(ref_id), {"trashed": True})
            if op is None:
                return False
            writer.log(op)
        return True

    def restore_reference(self, ref: str) -> None:
        with self.writing() as writer:
            ref_id = self.resolve_ref(ref)
            state = self._ref_state(ref_id)
            if registers.resolve(state.get("trashed", [])).value is not True:
                raise Conflict(f"Reference {ref_id} is not in the trash.")
            op = ops.put_fields(ops.REF_PUT, "ref", ref_id, state, {"trashed": None})
            assert op is not None
            writer.log(op)

    def empty_trash(self, progress: Callable[[int], None] | None = None) -> int:
        """Delete every reference in the trash for good (tombstones, so it propagates)."""
        deleted = 0
        while True:
            with self.writing() as writer:
                ids = [
                    r[0]
                    for r in self.db.execute("SELECT id FROM refs WHERE deleted = 0 AND trashed = 1 LIMIT ?", [BATCH])
                ]
                for ref_id in ids:
                    writer.log(self._delete_op(ref_id))
            for ref_id in ids:
                self._forget_files(ref_id)
            deleted += len(ids)
            if progress and ids:
                progress(len(ids))
            if len(ids) < BATCH:
                return deleted

    def _delete_op(self, ref_id: str) -> dict[str, Any]:
        # Groups and attachment manifests stay (hidden with the reference), so that keeping the
        # reference after a delete-vs-edit conflict brings back all of it.
        return ops.delete_ref(ref_id, self._ref_state(ref_id))

    def _forget_files(self, ref_id: str) -> None:
        with write_transaction(self.db):
            transfers.forget_ref(self.db, ref_id)
        transfers.remove_ref_files(self, ref_id)

    # --- groups -------------------------------------------------------------------------------

    def create_group(self, name: str) -> str:
        name = validate_group_name(name)
        if name.casefold() == SYNC_CONFLICTS.casefold():
            raise Conflict(f"'{SYNC_CONFLICTS}' is kept by p2psync for conflicted references; choose another name.")
        with self.writing() as writer:
            if self._groups_named(name):
                raise Conflict(f"A group named {name!r} already exists.")
            group_id = new_id()
            writer.log({"op": ops.GROUP_PUT, "group": group_id, "fields": {"name": name}, "seen": {}})
        return group_id

    def _groups_named(self, name: str) -> list[tuple[str, str]]:
        return [(g, n) for g, n in self.db.execute("SELECT id, name FROM groups WHERE name = ? COLLATE NOCASE", [name])]

    def find_group(self, name_or_id: str) -> dict[str, Any]:
        """A group by exact name, then case-insensitive name, then id or unique id prefix."""
        if name_or_id.casefold() in (SYNC_CONFLICTS.casefold(), SYNC_CONFLICTS_ID):
            return {"id": SYNC_CONFLICTS_ID, "name": SYNC_CONFLICTS}
        exact = [(g, n) for g, n in self._groups_named(name_or_id) if n == name_or_id]
        matches = exact or self._groups_named(name_or_id)
        if not matches and is_id_prefix(name_or_id.lower()):
            prefix = name_or_id.lower()
            matches = self.db.execute(
                "SELECT id, name FROM groups WHERE id >= ? AND id < ? LIMIT 2", [prefix, prefix + "~"]
            ).fetchall()
        if not matches:
            raise UnknownGroup(f"No group named {name_or_id!r}; see 'p2psync group list'.")
        if len(matches) > 1:
            raise AmbiguousId(f"More than one group is named {name_or_id!r}; use the group's id instead.")
        return {"id": matches[0][0], "name": matches[0][1]}

    def _user_group(self, group: str) -> str:
        """The id of a group the user may change (not the system group Sync Conflicts)."""
        group_id = str(self.find_group(group)["id"])
        if group_id == SYNC_CONFLICTS_ID:
            raise Conflict(
                f"'{SYNC_CONFLICTS}' is kept by p2psync: it holds the conflicted references until you resolve "
                "them with 'p2psync conflicts resolve'."
            )
        return group_id

    def rename_group(self, group: str, new_name: str) -> None:
        new_name = validate_group_name(new_name)
        if new_name.casefold() == SYNC_CONFLICTS.casefold():
            raise Conflict(f"'{SYNC_CONFLICTS}' is kept by p2psync for conflicted references; choose another name.")
        with self.writing() as writer:
            group_id = self._user_group(group)
            others = [g for g, _ in self._groups_named(new_name) if g != group_id]
            if others:
                raise Conflict(f"A group named {new_name!r} already exists.")
            op = ops.put_fields(ops.GROUP_PUT, "group", group_id, self._group_state(group_id), {"name": new_name})
            if op is not None:
                writer.log(op)

    def _group_state(self, group_id: str) -> ops.State:
        row = self.db.execute("SELECT state FROM groups WHERE id = ?", [group_id]).fetchone()
        state: ops.State = json.loads(row[0])
        return state

    def delete_group(self, group: str) -> None:
        """Delete the group; its references stay in the library."""
        with self.writing() as writer:
            group_id = self._user_group(group)
            members = {
                r: registers.dots(json.loads(d))
                for r, d in self.db.execute("SELECT ref_id, dots FROM memberships WHERE group_id = ?", [group_id])
            }
            writer.log(ops.delete_group(group_id, self._group_state(group_id), members))

    def add_to_group(self, group: str, refs: Iterable[str]) -> int:
        """Add references to a group; return how many were not members yet."""
        with self.writing() as writer:
            group_id = self._user_group(group)
            ids = list(dict.fromkeys(self.resolve_ref(r) for r in refs))
            present = {r for (r,) in self.db.execute("SELECT ref_id FROM memberships WHERE group_id = ?", [group_id])}
            new = [r for r in ids if r not in present]
            for start in range(0, len(new), ops.MAX_REFS_PER_OP):
                writer.log({"op": ops.MEMBER_ADD, "group": group_id, "refs": new[start : start + ops.MAX_REFS_PER_OP]})
        return len(new)

    def remove_from_group(self, group: str, refs: Iterable[str]) -> int:
        """Remove references from a group; return how many were members."""
        with self.writing() as writer:
            group_id = self._user_group(group)
            seen: dict[str, list[Any]] = {}
            for ref in refs:
                ref_id = self.resolve_ref(ref)
                row = self.db.execute(
                    "SELECT dots FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id]
                ).fetchone()
                if row:
                    seen[ref_id] = registers.dots(json.loads(row[0]))
            if seen:
                writer.log({"op": ops.MEMBER_REMOVE, "group": group_id, "seen": seen})
        return len(seen)

    def list_groups(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT g.id, g.name, g.conflict, "
            "(SELECT count(*) FROM memberships m JOIN refs r ON r.id = m.ref_id "
            " WHERE m.group_id = g.id AND r.trashed = 0 AND r.deleted = 0) "
            "FROM groups g ORDER BY g.name COLLATE NOCASE, g.id"
        ).fetchall()
        groups = [{"id": g, "name": n, "references": c, "conflict": bool(k)} for g, n, k, c in rows]
        conflicts = self.count_references(group=SYNC_CONFLICTS)
        if conflicts:  # the system group, shown while there is something in it
            groups.insert(
                0, {"id": SYNC_CONFLICTS_ID, "name": SYNC_CONFLICTS, "references": conflicts, "conflict": False}
            )
        return groups

    # --- attachments --------------------------------------------------------------------------

    def attachment_file(self, ref_id: str, name: str) -> Path:
        return self.path / ATTACHMENTS_DIR / ref_id / name

    def attach(
        self, ref: str, source: Path, name: str | None = None, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Copy a file into the library as an attachment of a reference (replacing one of that name)."""
        ref_id = self.resolve_ref(ref)
        source = Path(source)
        name = validate_name(name or source.name)
        if not source.is_file():
            raise FileProblem(f"The file {source} does not exist or is not a regular file.")
        target = self.attachment_file(ref_id, name)
        # The copy lands in a file of p2psync's own; it is renamed into place inside the
        # transaction that records it, so a crash leaves either the old or the new version.
        staging = transfers.incoming_path(self, name)
        copy_atomic(source, staging, progress)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            manifest = manifest_of(staging)  # what other devices fetch it by (model/chunking.py)
            size, digest = manifest["size"], manifest["sha256"]
            with self.writing() as writer:
                self._ref_state(ref_id)  # the reference must still exist
                entries = self._attachment_entries(ref_id, name)
                if registers.changed(entries, manifest):
                    writer.log(
                        {
                            "op": ops.ATTACHMENT_PUT,
                            "ref": ref_id,
                            "name": name,
                            "value": manifest,
                            "seen": registers.dots(entries),
                        }
                    )
                os.replace(staging, target)
                self._record_file(ref_id, name, target, manifest)
        finally:
            transfers.remove_incoming(staging)
        fsync_dir(target.parent)
        return {"ref": ref_id, "name": name, "size": size, "sha256": digest, "path": str(target)}

    def _attachment_entries(self, ref_id: str, name: str) -> list[registers.Entry]:
        row = self.db.execute("SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]).fetchone()
        entries: list[registers.Entry] = json.loads(row[0]) if row else []
        return entries

    def _record_file(self, ref_id: str, name: str, path: Path, manifest: dict[str, Any]) -> None:
        """Note a file on disk as holding `manifest` (inside a write transaction)."""
        previous = self.db.execute(
            "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
        ).fetchone()
        self.db.execute(
            "INSERT INTO attachment_files (ref_id, name, size, sha256, mtime_ns) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ref_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
            "mtime_ns = excluded.mtime_ns",
            [ref_id, name, manifest["size"], manifest["sha256"], path.stat().st_mtime_ns],
        )
        transfers.index_chunks(self.db, manifest)
        if previous and previous[0] != manifest["sha256"]:
            transfers.forget_unused(self.db, previous[0])

    def list_attachments(self, ref: str, scan: bool = True) -> list[dict[str, Any]]:
        """A reference's attachments, with whether each file is here and current."""
        ref_id = self.resolve_ref(ref)
        if scan:
            self.scan_attachments(ref_id)
        rows = self.db.execute(
            "SELECT a.name, a.size, a.sha256, a.conflict, f.sha256 FROM attachments a "
            "LEFT JOIN attachment_files f ON f.ref_id = a.ref_id AND f.name = a.name "
            "WHERE a.ref_id = ? AND (a.sha256 IS NOT NULL OR a.conflict = 1) ORDER BY a.name",
            [ref_id],
        ).fetchall()
        out = []
        versions = self._attachment_conflicts(ref_id)
        for name, size, digest, conflict, local_digest in rows:
            here = self.attachment_file(ref_id, name).is_file()
            present = local_digest is not None and local_digest == digest and here
            item = {
                "name": name,
                "size": size,
                "sha256": digest,
                "conflict": bool(conflict),
                "present": present,
                "path": str(self.attachment_file(ref_id, name)),
            }
            if (ref_id, name) in self._unsyncable:
                item["problem"] = "edited past about 1.5 GB: the other devices keep the last version that fitted"
            if conflict:  # every version, and where its file is until the conflict is resolved
                entries = versions.get(ATTACHMENT_FIELD + name, [])
                shown = registers.resolve(entries).value
                item["versions"] = [
                    {
                        "device": e[0],
                        "time": iso(e[2]),
                        **(self._version_file(ref_id, ATTACHMENT_FIELD + name, e[3], shown) or {"removed": True}),
                    }
                    for e in entries
                ]
            out.append(item)
        return out

    def _attachment_row(self, ref: str, name: str) -> tuple[str, dict[str, Any]]:
        ref_id = self.resolve_ref(ref)
        for item in self.list_attachments(ref_id):
            if item["name"] == name:
                return ref_id, item
        raise UnknownAttachment(
            f"Reference {ref_id} has no attachment named {name!r}; see 'p2psync attachment list {ref_id}'."
        )

    def attachment_path(self, ref: str, name: str) -> Path:
        ref_id, item = self._attachment_row(ref, name)
        if not item["present"]:
            raise UnknownAttachment(f"The file {name!r} is not on this machine yet; sync to fetch it.")
        return self.attachment_file(ref_id, name)

    def export_attachment(self, ref: str, name: str, out: Path) -> dict[str, Any]:
        """Write a byte-identical copy of an attachment to `out` (a file or a folder)."""
        source = self.attachment_path(ref, name)
        out = Path(out)
        if out.is_dir():
            out = out / name
        size, digest = copy_atomic(source, out)
        _, item = self._attachment_row(ref, name)
        if digest != item["sha256"]:
            out.unlink(missing_ok=True)
            raise LibraryCorrupt(f"The attachment {name!r} changed while being exported; try again.")
        return {"name": name, "size": size, "sha256": digest, "path": str(out)}

    def remove_attachment(self, ref: str, name: str) -> None:
        ref_id, _ = self._attachment_row(ref, name)
        with self.writing() as writer:
            entries = self._attachment_entries(ref_id, name)
            writer.log(
                {"op": ops.ATTACHMENT_PUT, "ref": ref_id, "name": name, "value": None, "seen": registers.dots(entries)}
            )
            row = self.db.execute(
                "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
            ).fetchone()
            self.db.execute("DELETE FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name])
            if row:
                transfers.forget_unused(self.db, row[0])
        self.attachment_file(ref_id, name).unlink(missing_ok=True)
        transfers.reconcile(self)  # other versions of a conflict, partial files: their space is freed too
        with contextlib.suppress(OSError):
            self.attachment_file(ref_id, name).parent.rmdir()  # only if now empty

    def record_local_edits(self) -> list[dict[str, Any]]:
        """Record attachment files edited in place as new versions. Every path that seals this
        device's changes or applies a peer's calls this first (store/sync.py, store/rebase.py), so
        that an annotation made here and one made elsewhere meet as a conflict. While a merge
        waits (store/rebase.py) the attachments are set aside: nothing is recorded until then."""
        if self.db.execute("SELECT 1 FROM merge_stash LIMIT 1").fetchone() is not None:
            return []
        return self.scan_attachments()

    def scan_attachments(self, ref_id: str | None = None) -> list[dict[str, Any]]:
        """Notice attachment files changed in place (size and mtime first, then the hash).

        A changed file is recorded as a new version of that attachment; a missing one is only
        reported (a file deleted by accident must not delete the attachment on every machine).
        """
        sql = "SELECT ref_id, name, size, sha256, mtime_ns FROM attachment_files"
        rows = self.db.execute(sql + (" WHERE ref_id = ?" if ref_id else ""), [ref_id] if ref_id else []).fetchall()
        found: list[dict[str, Any]] = []
        for r_id, name, size, digest, mtime_ns in rows:
            path = self.attachment_file(r_id, name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                found.append({"ref": r_id, "name": name, "change": "missing"})
                continue
            if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
                continue
            if self._unsyncable.get((r_id, name)) == (stat.st_size, stat.st_mtime_ns):
                continue
            try:
                manifest = manifest_of(path)
            except FileNotFoundError:
                found.append({"ref": r_id, "name": name, "change": "missing"})
                continue
            except InvalidValue as exc:  # grown past what a manifest can describe: keep the last version
                self._unsyncable[(r_id, name)] = (stat.st_size, stat.st_mtime_ns)
                found.append({"ref": r_id, "name": name, "change": "too_large", "error": exc.message})
                continue
            new_size, new_digest = manifest["size"], manifest["sha256"]
            with self.writing() as writer:
                if new_digest != digest:
                    entries = self._attachment_entries(r_id, name)
                    # The edit was made to the version this file held (`digest`) and replaces
                    # only that one. If a peer's version replaced it in the register meanwhile,
                    # the two edits are concurrent: a conflict with both kept, never a loss.
                    base = [e for e in entries if isinstance(e[3], dict) and e[3]["sha256"] == digest]
                    if registers.changed(entries, manifest):
                        writer.log(
                            {
                                "op": ops.ATTACHMENT_PUT,
                                "ref": r_id,
                                "name": name,
                                "value": manifest,
                                "seen": registers.dots(base),
                            }
                        )
                    found.append({"ref": r_id, "name": name, "change": "modified", "size": new_size})
                self._record_file(r_id, name, path, manifest)
        return found

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
            "groups": count("SELECT count(*) FROM groups"),
            "attachments": count(
                "SELECT count(*) FROM attachments a JOIN refs r ON r.id = a.ref_id "
                "WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
            ),
            "attachment_bytes": count(
                "SELECT coalesce(sum(a.size), 0) FROM attachments a JOIN refs r ON r.id = a.ref_id "
                "WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
            ),
            "conflicts": count(f"SELECT count(*) FROM refs WHERE {IN_CONFLICT}"),
            "changes": count("SELECT count(*) FROM changelog"),
            "schema_version": schema.SCHEMA_VERSION,
        }

    def devices(self) -> list[dict[str, Any]]:
        """The library's member devices, oldest introduction first."""
        rows = self.db.execute(
            "SELECT d.id, d.name, d.introducer, d.public_key, v.upto FROM devices d "
            "LEFT JOIN revocations v ON v.device = d.id "
            "JOIN changelog c ON c.device = d.author AND c.seq = d.seq ORDER BY c.num"
        ).fetchall()
        return [
            {
                "device_id": i,
                "short_id": short_id(i),
                "name": n,
                "introducer": k,
                "public_key": p,
                "this_device": i == self.device_id,
                "revoked": r is not None,
            }
            for i, n, k, p, r in rows
        ]

    def add_device(self, public_key: bytes, name: str) -> str:
        """Introduce another device into this library (pairing does this); return its id."""
        new = DeviceIdentity.from_public(public_key)
        with self.writing() as writer:
            writer.log(device_add_op(new, name[: ops.MAX_DEVICE_NAME] or "device", self.identity(), self.library_id))
        return new.device_id

    def revoke_device(self, device: str) -> dict[str, Any]:
        """Remove a device from the library: nothing it writes after what we have seen is accepted."""
        matches = [d for d in self.devices() if d["device_id"].startswith(device.upper())]
        if len(matches) != 1:
            raise UnknownDevice(f"No single member device matches {device!r}; see 'p2psync peers'.")
        target = matches[0]
        if target["this_device"]:
            raise Conflict("This device cannot remove itself; remove it from another machine.")
        with self.writing() as writer:
            row = self.db.execute("SELECT max(last) FROM changesets WHERE author = ?", [target["device_id"]]).fetchone()
            writer.log({"op": ops.DEVICE_REVOKE, "device": target["device_id"], "upto": int(row[0] or 0)})
        return target

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


def _uncovered_dots(state: ops.State) -> list[tuple[str, int, int]]:
    """(device, seq, ts) of the entries no delete had seen: the edits made meanwhile."""
    covered = {(d[0], d[1]) for e in state.get(merge.DELETED, []) if e[3] is not None for d in e[3]}
    return sorted(
        {
            (e[0], e[1], e[2])
            for name, entries in state.items()
            if name != merge.DELETED
            for e in entries
            if (e[0], e[1]) not in covered
        }
    )


def device_name() -> str:
    """A name for this machine that people recognise (its host name)."""
    return (socket.gethostname() or "device")[: ops.MAX_DEVICE_NAME]


def device_add_op(
    new: DeviceIdentity, name: str, introducer: DeviceIdentity | None, library_id: str | None
) -> dict[str, Any]:
    """The operation that makes `new` a member, introduced (signed) by `introducer` if given."""
    signature = None
    if introducer is not None:
        assert library_id is not None
        message = introduction_message(library_id, new.device_id, new.public_bytes)
        signature = base64.b64encode(introducer.sign(message)).decode("ascii")
    return {
        "op": ops.DEVICE_ADD,
        "device": new.device_id,
        "key": base64.b64encode(new.public_bytes).decode("ascii"),
        "name": name,
        "introducer": introducer.device_id if introducer else None,
        "signature": signature,
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """The user-facing form of a refs row."""
    data = json.loads(row["data"])
    record: dict[str, Any] = {"id": row["id"]}
    for name in catalogue.FIELDS:
        if name in data:
            record[name] = data[name]
    record["trashed"] = bool(row["trashed"])
    record["added"] = iso(row["added"])
    record["modified"] = iso(row["modified"])
    if row["conflict"]:
        record["conflicts"] = merge.reference_view(registers.unpack(json.loads(row["state"]), data)).conflicts
    return record
