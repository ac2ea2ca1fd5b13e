"""Groups: named sets of references, and the system group "Sync Conflicts".

A group is a register `name`; its memberships are an add-wins set (engine/ops.py). "Sync
Conflicts" is not stored: it is every reference in conflict (store/library/conflicts.py), shown
among the groups while it holds something, and no one may rename, delete or fill it by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from p2psync.engine import ops, registers
from p2psync.errors import AmbiguousId, Conflict, UnknownGroup
from p2psync.model.groups import SYNC_CONFLICTS, SYNC_CONFLICTS_ID, validate_group_name
from p2psync.model.ids import is_id_prefix
from p2psync.store.library.records import GroupName, GroupRow

if TYPE_CHECKING:
    from p2psync.store.library import Library

RESERVED = f"'{SYNC_CONFLICTS}' is kept by p2psync for conflicted references; choose another name."


class Groups:
    def __init__(self, library: Library) -> None:
        self.library = library

    def create(self, name: str) -> str:
        name = validate_group_name(name)
        if name.casefold() == SYNC_CONFLICTS.casefold():
            raise Conflict(RESERVED)
        with self.library.writing() as writer:
            if self._named(name):
                raise Conflict(f"A group named {name!r} already exists.")
            group_id = writer.new_id()
            writer.log(ops.group_put(group_id, name))
        return group_id

    def _named(self, name: str) -> list[tuple[str, str]]:
        sql = "SELECT id, name FROM groups WHERE name = ? COLLATE NOCASE"
        return [(g, n) for g, n in self.library.db.execute(sql, [name])]

    def find(self, name_or_id: str) -> GroupName:
        """A group by exact name, then case-insensitive name, then id or unique id prefix."""
        if name_or_id.casefold() in (SYNC_CONFLICTS.casefold(), SYNC_CONFLICTS_ID):
            return GroupName(SYNC_CONFLICTS_ID, SYNC_CONFLICTS)
        exact = [(g, n) for g, n in self._named(name_or_id) if n == name_or_id]
        matches = exact or self._named(name_or_id)
        if not matches and is_id_prefix(name_or_id.lower()):
            prefix = name_or_id.lower()
            matches = self.library.db.execute(
                "SELECT id, name FROM groups WHERE id >= ? AND id < ? LIMIT 2", [prefix, prefix + "~"]
            ).fetchall()
        if not matches:
            raise UnknownGroup(f"No group named {name_or_id!r}; see 'p2psync group list'.")
        if len(matches) > 1:
            raise AmbiguousId(f"More than one group is named {name_or_id!r}; use the group's id instead.")
        return GroupName(matches[0][0], matches[0][1])

    def _user_group(self, group: str) -> str:
        """The id of a group the user may change (not the system group Sync Conflicts)."""
        group_id = self.find(group).id
        if group_id == SYNC_CONFLICTS_ID:
            raise Conflict(
                f"'{SYNC_CONFLICTS}' is kept by p2psync: it holds the conflicted references until you resolve "
                "them with 'p2psync conflicts resolve'."
            )
        return group_id

    def rename(self, group: str, new_name: str) -> None:
        new_name = validate_group_name(new_name)
        if new_name.casefold() == SYNC_CONFLICTS.casefold():
            raise Conflict(RESERVED)
        with self.library.writing() as writer:
            group_id = self._user_group(group)
            others = [g for g, _ in self._named(new_name) if g != group_id]
            if others:
                raise Conflict(f"A group named {new_name!r} already exists.")
            op = ops.put_fields(ops.GROUP_PUT, "group", group_id, self._state(group_id), {"name": new_name})
            if op is not None:
                writer.log(op)

    def _state(self, group_id: str) -> ops.State:
        row = self.library.db.execute("SELECT state FROM groups WHERE id = ?", [group_id]).fetchone()
        state: ops.State = json.loads(row[0])
        return state

    def delete(self, group: str) -> None:
        """Delete the group; its references stay in the library."""
        db = self.library.db
        with self.library.writing() as writer:
            group_id = self._user_group(group)
            members = {
                r: registers.dots(json.loads(d))
                for r, d in db.execute("SELECT ref_id, dots FROM memberships WHERE group_id = ?", [group_id])
            }
            writer.log(ops.delete_group(group_id, self._state(group_id), members))

    def add_refs(self, group: str, refs: Iterable[str]) -> int:
        """Add references to a group; return how many were not members yet."""
        db = self.library.db
        with self.library.writing() as writer:
            group_id = self._user_group(group)
            ids = list(dict.fromkeys(self.library.refs.resolve(r) for r in refs))
            present = {r for (r,) in db.execute("SELECT ref_id FROM memberships WHERE group_id = ?", [group_id])}
            new = [r for r in ids if r not in present]
            for start in range(0, len(new), ops.MAX_REFS_PER_OP):
                writer.log(ops.member_add(group_id, new[start : start + ops.MAX_REFS_PER_OP]))
        return len(new)

    def remove_refs(self, group: str, refs: Iterable[str]) -> int:
        """Remove references from a group; return how many were members."""
        db = self.library.db
        with self.library.writing() as writer:
            group_id = self._user_group(group)
            seen: dict[str, list[Any]] = {}
            for ref in refs:
                ref_id = self.library.refs.resolve(ref)
                row = db.execute(
                    "SELECT dots FROM memberships WHERE group_id = ? AND ref_id = ?", [group_id, ref_id]
                ).fetchone()
                if row:
                    seen[ref_id] = registers.dots(json.loads(row[0]))
            if seen:
                writer.log(ops.member_remove(group_id, seen))
        return len(seen)

    def of_reference(self, ref_id: str) -> list[GroupName]:
        """The stored groups a reference is in, by name."""
        return [
            GroupName(g, n)
            for g, n in self.library.db.execute(
                "SELECT g.id, g.name FROM memberships m JOIN groups g ON g.id = m.group_id "
                "WHERE m.ref_id = ? ORDER BY g.name, g.id",
                [ref_id],
            )
        ]

    def listing(self) -> list[dict[str, Any]]:
        return [group.as_dict() for group in self.rows()]

    def rows(self, system: bool = True) -> list[GroupRow]:
        """Every group by name, with how many references each holds; first, while it holds
        something, the system group Sync Conflicts (unless `system` is False)."""
        rows = self.library.db.execute(
            "SELECT g.id, g.name, g.conflict, "
            "(SELECT count(*) FROM memberships m JOIN refs r ON r.id = m.ref_id "
            " WHERE m.group_id = g.id AND r.trashed = 0 AND r.deleted = 0) "
            "FROM groups g ORDER BY g.name COLLATE NOCASE, g.id"
        ).fetchall()
        groups = [GroupRow(g, n, c, bool(k)) for g, n, k, c in rows]
        conflicts = self.library.refs.count(group=SYNC_CONFLICTS) if system else 0
        if conflicts:  # the system group, shown while there is something in it
            groups.insert(0, GroupRow(SYNC_CONFLICTS_ID, SYNC_CONFLICTS, conflicts, False))
        return groups

    def by_id(self, group_id: str) -> GroupName:
        """A stored group by its exact id (what a page sends back)."""
        row = self.library.db.execute("SELECT id, name FROM groups WHERE id = ?", [group_id]).fetchone()
        if row is None:
            raise UnknownGroup("There is no such group (it may have been deleted, here or on another device).")
        return GroupName(row[0], row[1] or "")
