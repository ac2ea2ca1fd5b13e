"""Group sets: named folders of groups (EndNote's group sets).

A set is a register `name` (groupset.put, groupset.delete in engine/ops.py); which set a group is
in is the group's own register `set` (store/library/groups.py), so a group is in at most one set
and a move is one write to the group. Deleting a set writes nothing to its groups: a group whose
set is deleted (here, or on another device while this one filed a group in it) shows unfiled,
the same on every device, and its references stay where they were. A set's name is unique among
sets (case aside), apart from group names.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from p2psync.engine import ops
from p2psync.errors import AmbiguousId, Conflict, UnknownGroup
from p2psync.model.groups import validate_set_name
from p2psync.model.ids import is_id_prefix
from p2psync.store.library.records import GroupName, GroupRow, GroupSetRow

if TYPE_CHECKING:
    from p2psync.store.library import Library


class GroupSets:
    def __init__(self, library: Library) -> None:
        self.library = library

    def create(self, name: str) -> str:
        name = validate_set_name(name)
        with self.library.writing() as writer:
            if self._named(name):
                raise Conflict(f"A group set named {name!r} already exists.")
            set_id = writer.new_id()
            writer.log(ops.groupset_put(set_id, name))
        return set_id

    def _named(self, name: str) -> list[tuple[str, str]]:
        sql = "SELECT id, name FROM group_sets WHERE name = ? COLLATE NOCASE"
        return [(s, n) for s, n in self.library.db.execute(sql, [name])]

    def find(self, name_or_id: str) -> GroupName:
        """A set by exact name, then case-insensitive name, then id or unique id prefix."""
        exact = [(s, n) for s, n in self._named(name_or_id) if n == name_or_id]
        matches = exact or self._named(name_or_id)
        if not matches and is_id_prefix(name_or_id.lower()):
            prefix = name_or_id.lower()
            matches = self.library.db.execute(
                "SELECT id, name FROM group_sets WHERE id >= ? AND id < ? AND name IS NOT NULL LIMIT 2",
                [prefix, prefix + "~"],
            ).fetchall()
        if not matches:
            raise UnknownGroup(f"No group set named {name_or_id!r}; see 'p2psync group set list'.")
        if len(matches) > 1:
            raise AmbiguousId(f"More than one group set is named {name_or_id!r}; use the set's id instead.")
        return GroupName(matches[0][0], matches[0][1])

    def _state(self, set_id: str) -> ops.State:
        row = self.library.db.execute("SELECT state FROM group_sets WHERE id = ?", [set_id]).fetchone()
        state: ops.State = json.loads(row[0])
        return state

    def rename(self, group_set: str, new_name: str) -> None:
        new_name = validate_set_name(new_name)
        with self.library.writing() as writer:
            set_id = self.find(group_set).id
            if [s for s, _ in self._named(new_name) if s != set_id]:
                raise Conflict(f"A group set named {new_name!r} already exists.")
            op = ops.put_fields(ops.GROUPSET_PUT, "set", set_id, self._state(set_id), {"name": new_name})
            if op is not None:
                writer.log(op)

    def delete(self, group_set: str) -> GroupName:
        """Delete a set; its groups stay, unfiled, with their references."""
        with self.library.writing() as writer:
            found = self.find(group_set)
            writer.log(ops.delete_groupset(found.id, self._state(found.id)))
        return found

    def shown(self, set_id: str | None) -> str | None:
        """The set a group's register names, if that set is here and named (else: unfiled)."""
        if set_id is None:
            return None
        row = self.library.db.execute("SELECT 1 FROM group_sets WHERE id = ? AND name IS NOT NULL", [set_id]).fetchone()
        return set_id if row else None

    def rows(self, groups: list[GroupRow] | None = None) -> list[GroupSetRow]:
        """Every set by name, each with its groups (from `groups`, else every group)."""
        groups = self.library.groups.rows(system=False) if groups is None else groups
        found = self.library.db.execute(
            "SELECT id, name, conflict FROM group_sets WHERE name IS NOT NULL ORDER BY name COLLATE NOCASE, id"
        ).fetchall()
        return [GroupSetRow(s, n, bool(k), tuple(g for g in groups if g.set == s)) for s, n, k in found]
