"""Groups: named sets of references, smart groups, and the system group "Sync Conflicts".

A group is a register `name`; its memberships are an add-wins set (engine/ops.py). A smart group
has a register `query` too (a saved search, model/groups.py): its members are the references
that match the search when it is read, through the full-text index with the words passed as a
parameter (references.fts_query), never stored and never filled by hand. A group's register
`set` files it in a group set (store/library/group_sets.py). A group whose name register is
empty (a move that crossed its delete) is not shown. "Sync Conflicts" is not stored: it is every
reference in conflict (store/library/conflicts.py), shown among the groups while it holds
something, and no one may rename, delete or fill it by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from p2psync.engine import ops, registers
from p2psync.errors import AmbiguousId, Conflict, UnknownGroup
from p2psync.model.groups import SYNC_CONFLICTS, SYNC_CONFLICTS_ID, validate_group_name, validate_smart_query
from p2psync.model.ids import is_id_prefix
from p2psync.store.library.records import GroupName, GroupRow, ReferenceRow
from p2psync.store.library.references import fts_query, rows

if TYPE_CHECKING:
    from p2psync.store.library import Library

RESERVED = f"'{SYNC_CONFLICTS}' is kept by p2psync for conflicted references; choose another name."


class Groups:
    def __init__(self, library: Library) -> None:
        self.library = library

    def create(self, name: str, query: str | None = None, group_set: str | None = None) -> str:
        """A new group: a smart one when `query` (a search) is given; filed in `group_set` (a set's
        name or id) if given."""
        name = validate_group_name(name)
        if query is not None:
            query = validate_smart_query(query)
        if name.casefold() == SYNC_CONFLICTS.casefold():
            raise Conflict(RESERVED)
        with self.library.writing() as writer:
            if self._named(name):
                raise Conflict(f"A group named {name!r} already exists.")
            set_id = self.library.sets.find(group_set).id if group_set is not None else None
            group_id = writer.new_id()
            writer.log(ops.group_put(group_id, name, query=query, group_set=set_id))
        return group_id

    def create_smart(self, name: str, query: str, group_set: str | None = None) -> str:
        return self.create(name, query, group_set)

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
                "SELECT id, name FROM groups WHERE id >= ? AND id < ? AND name IS NOT NULL LIMIT 2",
                [prefix, prefix + "~"],
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
            state = self._state(group_id)
            op = ops.put_fields(ops.GROUP_PUT, "group", group_id, state, {"name": new_name})
            if op is not None and state.get("query"):
                # A smart group's rename writes its search again: a delete that crosses the
                # rename then brings it back smart, not as an empty plain group.
                op["fields"]["query"] = registers.resolve(state["query"]).value
                op["seen"]["query"] = registers.dots(state["query"])
            if op is not None:
                writer.log(op)

    def set_query(self, group: str, query: str) -> None:
        """Change a smart group's search."""
        query = validate_smart_query(query)
        with self.library.writing() as writer:
            group_id = self._user_group(group)
            state = self._state(group_id)
            if not state.get("query"):
                raise Conflict(f"{self.by_id(group_id).name!r} is a plain group; only a smart group has a search.")
            op = ops.put_fields(ops.GROUP_PUT, "group", group_id, state, {"query": query})
            if op is not None:
                writer.log(op)

    def file_many(self, groups: Iterable[str], group_set: str | None) -> list[GroupName]:
        """File groups in a group set (a set's name or id), or take them out of their set (None),
        in one transaction: all or none."""
        filed: list[GroupName] = []
        with self.library.writing() as writer:
            set_id = self.library.sets.find(group_set).id if group_set is not None else None
            for group in dict.fromkeys(groups):
                group_id = self._user_group(group)
                op = ops.put_fields(ops.GROUP_PUT, "group", group_id, self._state(group_id), {"set": set_id})
                if op is not None:
                    writer.log(op)
                filed.append(self.by_id(group_id))
        return filed

    def query_of(self, group_id: str) -> str | None:
        """A smart group's search (None for a plain group or no group)."""
        row = self.library.db.execute("SELECT query FROM groups WHERE id = ?", [group_id]).fetchone()
        return row[0] if row else None

    def _refuse_smart(self, group_id: str) -> None:
        query = self.query_of(group_id)
        if query is not None:
            raise Conflict(
                f"{self.by_id(group_id).name!r} is a smart group: it holds the references that match {query!r}; "
                "change its search with 'p2psync group smart edit' instead."
            )

    def smart_members(self, query: str, limit: int | None = None, offset: int = 0) -> Iterator[ReferenceRow]:
        """The references (not in the trash) that match a smart group's search now, oldest first."""
        self.library.refs.index_now()
        sql = (
            "SELECT r.* FROM refs_fts f JOIN refs r ON r.num = f.rowid WHERE refs_fts MATCH ? "
            "AND r.deleted = 0 AND r.trashed = 0 ORDER BY r.added, r.id LIMIT ? OFFSET ?"
        )
        return rows(self.library.db, sql, [fts_query(query), -1 if limit is None else limit, offset])

    def smart_count(self, query: str) -> int:
        self.library.refs.index_now()
        sql = (
            "SELECT count(*) FROM refs_fts f JOIN refs r ON r.num = f.rowid WHERE refs_fts MATCH ? "
            "AND r.deleted = 0 AND r.trashed = 0"
        )
        return int(self.library.db.execute(sql, [fts_query(query)]).fetchone()[0])

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
            self._refuse_smart(group_id)
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
            self._refuse_smart(group_id)
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
                "WHERE m.ref_id = ? AND g.name IS NOT NULL AND g.query IS NULL ORDER BY g.name, g.id",
                [ref_id],
            )
        ]

    def listing(self) -> list[dict[str, Any]]:
        return [group.as_dict() for group in self.rows()]

    def rows(self, system: bool = True) -> list[GroupRow]:
        """Every group by name, with how many references each holds; first, while it holds
        something, the system group Sync Conflicts (unless `system` is False)."""
        found = self.library.db.execute(
            "SELECT g.id, g.name, g.conflict, g.query, g.set_id, "
            "CASE WHEN g.query IS NULL THEN (SELECT count(*) FROM memberships m JOIN refs r ON r.id = m.ref_id "
            " WHERE m.group_id = g.id AND r.trashed = 0 AND r.deleted = 0) END "
            "FROM groups g WHERE g.name IS NOT NULL ORDER BY g.name COLLATE NOCASE, g.id"
        ).fetchall()
        groups = [
            GroupRow(g, n, self.smart_count(q) if q is not None else c, bool(k), q, self.library.sets.shown(s))
            for g, n, k, q, s, c in found
        ]
        conflicts = self.library.refs.count(group=SYNC_CONFLICTS) if system else 0
        if conflicts:  # the system group, shown while there is something in it
            groups.insert(0, GroupRow(SYNC_CONFLICTS_ID, SYNC_CONFLICTS, conflicts, False))
        return groups

    def by_id(self, group_id: str) -> GroupName:
        """A stored group by its exact id (what a page sends back)."""
        row = self.library.db.execute(
            "SELECT id, name FROM groups WHERE id = ? AND name IS NOT NULL", [group_id]
        ).fetchone()
        if row is None:
            raise UnknownGroup("There is no such group (it may have been deleted, here or on another device).")
        return GroupName(row[0], row[1] or "")
