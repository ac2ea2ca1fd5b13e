"""Sync conflicts: the references whose registers disagree, every version, and resolving them.

A conflict is never stored as such: it is a register holding several values (engine/registers.py),
so "Sync Conflicts" is the same on every machine. A conflicted attachment is the pseudo-field
`attachment:NAME` (its versions come from store/library/attachments.py); the pseudo-field
`deleted` lists who deleted the reference and who changed it meanwhile. Resolving is an ordinary
write that has seen every version, so every machine that receives it shows the same reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2psync.engine import merge, ops, registers
from p2psync.errors import Conflict, InvalidValue
from p2psync.model import fields as catalogue
from p2psync.store import transfers
from p2psync.store.library.attachments import ATTACHMENT_FIELD
from p2psync.store.library.records import iso
from p2psync.store.library.references import IN_CONFLICT, rows

if TYPE_CHECKING:
    from p2psync.store.library import Library


class Conflicts:
    def __init__(self, library: Library) -> None:
        self.library = library

    def listing(self) -> list[dict[str, Any]]:
        """Every reference in conflict, oldest first, with the names of its conflicted fields."""
        attachments = self.library.attachments
        found = rows(self.library.db, f"SELECT * FROM refs WHERE {IN_CONFLICT} AND deleted = 0 ORDER BY added, id", [])
        return [{"id": r.id, "title": r.title, "fields": [*r.conflicts, *attachments.conflicts(r.id)]} for r in found]

    def count(self) -> int:
        """How many references are in conflict (deleted ones included, as `info` has always said)."""
        return int(self.library.db.execute(f"SELECT count(*) FROM refs WHERE {IN_CONFLICT}").fetchone()[0])

    def versions(self, ref: str) -> dict[str, list[dict[str, Any]]]:
        """Every version of every field in conflict, oldest first (for 'conflicts show').

        The pseudo-field "deleted" lists who deleted the reference and who changed it meanwhile.
        """
        library = self.library
        ref_id = library.refs.resolve(ref)
        state = library.refs.state(ref_id)
        names = {d.device_id: d.name for d in library.members.listing()}

        def version(device: str, seq: int, ts: int, value: Any) -> dict[str, Any]:
            return {
                "device": device,
                "device_name": names.get(device, device[:7]),
                "seq": seq,
                "time": iso(ts),
                "value": value,
                "this_device": device == library.device_id,
            }

        out: dict[str, list[dict[str, Any]]] = {}
        for name in merge.reference_view(state).conflicts:
            if name == merge.DELETED:
                out[name] = [version(e[0], e[1], e[2], True) for e in state[name] if e[3] is not None]
                out[name] += [version(*dot, False) for dot in sorted(uncovered_dots(state), key=registers.order_key)]
            else:
                entries = sorted(state[name], key=registers.order_key)
                out[name] = [version(e[0], e[1], e[2], e[3]) for e in entries]
        for name, entries in library.attachments.conflicts(ref_id).items():
            shown = registers.resolve(entries).value
            out[name] = [
                version(e[0], e[1], e[2], library.attachments.version_file(ref_id, name, e[3], shown))
                for e in sorted(entries, key=registers.order_key)
            ]
        return out

    def resolve(
        self,
        ref: str,
        keep: str | None = None,
        fields: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
    ) -> list[str]:
        """Resolve a reference's conflicts by choosing versions; return the fields resolved.

        keep: "local" (this device's version), "remote" (the newest version from another device)
        or a device id (or its start) for every conflicted field; fields: the same choice per
        field, which wins over keep; values: a new value typed for a field instead of any
        version (its text form, as `ref edit --field` takes it), which wins over both. A
        conflicted attachment is the field "attachment:NAME"; the versions not kept are deleted
        from disk. The resolution is an ordinary write that has seen every version, so every
        machine that receives it shows the same, conflict-free reference.
        """
        resolved = self._resolve(ref, keep, fields, values or {})
        if any(name.startswith(ATTACHMENT_FIELD) for name in resolved):
            transfers.reconcile(self.library)  # the kept version takes the attachment's path; the others go
        return resolved

    def _resolve(self, ref: str, keep: str | None, fields: dict[str, str] | None, typed: dict[str, str]) -> list[str]:
        library = self.library
        with library.writing() as writer:
            ref_id = library.refs.resolve(ref)
            state = library.refs.state(ref_id)
            files = library.attachments.conflicts(ref_id)
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
            new_values = {}
            for name, text in typed.items():
                if name not in conflicted:
                    raise InvalidValue(
                        f"Field {name!r} of {ref_id} is not in conflict; conflicted: {', '.join(conflicted)}."
                    )
                if name not in catalogue.FIELDS:  # an attachment, or deleted-or-not: choose a version
                    raise InvalidValue(f"{name!r} takes no typed value; choose one of its versions.")
                new_values[name] = catalogue.parse_text(name, text)
                choices.pop(name, None)
            missing = [n for n in conflicted if n not in choices and n not in new_values]
            if missing:
                raise InvalidValue(f"Say which version to keep for: {', '.join(missing)} (--keep or --field NAME=WHO).")
            done_files = sorted(n for n in choices if n in files)
            for field_name in done_files:
                chosen = self._choose(files[field_name], choices.pop(field_name), field_name)
                file_name = field_name[len(ATTACHMENT_FIELD) :]
                writer.log(ops.attachment_put(ref_id, file_name, chosen[3], registers.dots(files[field_name])))
            if not choices and not new_values:  # only attachments were in conflict
                return done_files
            delete_choice = choices.pop(merge.DELETED, None)
            values = {name: self._choose(state[name], choice, name)[3] for name, choice in choices.items()}
            values.update(new_values)
            if delete_choice is not None:
                deleters = [e for e in state[merge.DELETED] if e[3] is not None]
                editors = [[*dot, None] for dot in uncovered_dots(state)]
                if self._choose(deleters + editors, delete_choice, merge.DELETED)[3] is not None:
                    writer.log(library.trash.delete_op(ref_id))  # the deleting side wins: delete, having seen all
                    return [*choices, *new_values, merge.DELETED, *done_files]
                values[merge.DELETED] = None  # keep the reference: lift the deletes
            writer.log(ops.ref_put(ref_id, values, {name: registers.dots(state[name]) for name in values}))
        return sorted([*values, *done_files])

    def _choose(self, entries: list[registers.Entry], choice: str, name: str) -> registers.Entry:
        device_id = self.library.device_id
        choice = choice.strip()
        if not choice:  # (an empty device id would be the start of every one)
            raise InvalidValue(f"Say whose version of {name!r} to keep: local, remote or a device id.")
        if choice == "local":
            picked = [e for e in entries if e[0] == device_id]
        elif choice == "remote":
            picked = [e for e in entries if e[0] != device_id]
        else:
            picked = [e for e in entries if e[0].startswith(choice.upper())]
        if not picked:
            who = {"local": "this device", "remote": "another device"}.get(choice, f"device {choice}")
            raise InvalidValue(f"No version of {name!r} comes from {who}; see 'p2psync conflicts show'.")
        return max(picked, key=registers.order_key)


def field_label(name: str) -> str:
    """A conflicted field as people read it: the catalogue's label, or the attachment's name."""
    if name.startswith(ATTACHMENT_FIELD):
        return f"Attachment {name[len(ATTACHMENT_FIELD) :]}"
    return "Deleted / changed" if name == merge.DELETED else catalogue.FIELDS[name].label


def value_text(name: str, value: Any) -> str:
    """One version's value in words (an attachment's: size, hash and where its file is)."""
    if name.startswith(ATTACHMENT_FIELD):
        if value is None:
            return "removed the attachment"
        where = value["path"] if value["present"] else "not on this machine yet"
        return f"{value['size']:,} bytes, sha256:{value['sha256'][:12]}, {where}"
    if name == merge.DELETED:
        return "deleted the reference" if value else "changed it meanwhile"
    return catalogue.format_value(name, value) or "(empty)"


def uncovered_dots(state: ops.State) -> list[tuple[str, int, int]]:
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
