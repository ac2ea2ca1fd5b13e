"""What a reference looks like, given its registers: provisional values, conflicts, deletion.

Permanent delete does not erase a reference's registers; it writes the register "deleted", whose
value lists the dots the delete had seen (covered). A reference is deleted while every entry of
its other registers is covered by some delete. An entry no delete had seen means someone edited
(or restored) the reference concurrently with its deletion: that is a conflict on "deleted", the
reference stays visible with every value intact, and resolving it either deletes again (a delete
that has seen everything) or keeps it (writing deleted = null over the deletes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2psync.engine import registers

DELETED = "deleted"


@dataclass(frozen=True)
class ReferenceView:
    data: dict[str, Any]  # provisional value of every field (no "deleted")
    conflicts: list[str]  # sorted field names; "deleted" for a delete concurrent with an edit
    deleted: bool


def reference_view(state: dict[str, list[registers.Entry]]) -> ReferenceView:
    data: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in sorted(state):
        if name == DELETED:
            continue
        resolved = registers.resolve(state[name])
        if resolved.value is not None:
            data[name] = resolved.value
        if resolved.conflict:
            conflicts.append(name)
    deletes = [e for e in state.get(DELETED, []) if e[3] is not None]
    deleted = False
    if deletes:
        covered = {(d[0], d[1]) for e in deletes for d in e[3]}
        survivors = any(
            (e[0], e[1]) not in covered for name, entries in state.items() if name != DELETED for e in entries
        )
        if survivors:
            conflicts = sorted([*conflicts, DELETED])
        else:
            deleted = True
    return ReferenceView(data, conflicts, deleted)


def covered_dots(seen: dict[str, list[Any]]) -> list[list[Any]]:
    """The value a delete writes into "deleted": every dot it had seen, sorted."""
    return [list(d) for d in sorted({(d[0], d[1]) for dots in seen.values() for d in dots})]
