"""The spec's pure rules, modelled from protocol/merge.md and changesets.md (never imported from
p2psync): the operation kinds and limits, multi-value registers (merge.md §3), the view of a
reference with its delete marks (§5.1), and how a writer builds its operations (§3.3, §5.3).

A register is a list of entries [device, seq, ts, value], kept sorted by (device, seq).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from vectors_model.canonical_text import encode

Entry = list[Any]  # [device, seq, ts, value]
State = dict[str, list[Entry]]  # register name -> entries
Op = dict[str, Any]

# merge.md §2.2: the operation kinds
REF_PUT, REF_DELETE = "ref.put", "ref.delete"
GROUP_PUT, GROUP_DELETE = "group.put", "group.delete"
MEMBER_ADD, MEMBER_REMOVE = "member.add", "member.remove"
ATTACHMENT_PUT = "attachment.put"
DEVICE_ADD, DEVICE_REVOKE, DEVICE_NAME = "device.add", "device.revoke", "device.name"
GROUPSET_PUT, GROUPSET_DELETE = "groupset.put", "groupset.delete"
LIBRARY_NAME = "library.name"
DELETED = "deleted"  # the register a permanent delete writes (§5.3)

# merge.md §2.6 and changesets.md §11: the limits
MAX_INT = 2**53
MAX_OP_BYTES = 3 * 1024 * 1024
MAX_DOTS = 10_000
MAX_REFS_PER_OP = 10_000
MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 1_000
TARGET_BYTES = 1024 * 1024
MAX_DEPS = 10_000
MAX_TS = MAX_INT


# --- registers (merge.md §3) ------------------------------------------------------------------


def dots(entries: list[Entry]) -> list[list[Any]]:
    return [[e[0], e[1]] for e in entries]


def write(entries: list[Entry], dot: tuple[str, int], ts: int, value: Any, seen: list[Any]) -> list[Entry]:
    """write(R, d, ts, value, seen) = {e in R : dot(e) not in seen and dot(e) != d} ∪ {[d, ts, value]}"""
    named = {(d[0], d[1]) for d in seen} | {dot}
    kept = [e for e in entries if (e[0], e[1]) not in named]
    return sorted([*kept, [dot[0], dot[1], ts, value]], key=lambda e: (e[0], e[1]))


def remove(entries: list[Entry], seen: list[Any]) -> list[Entry]:
    named = {(d[0], d[1]) for d in seen}
    return [e for e in entries if (e[0], e[1]) not in named]


class Resolved(NamedTuple):
    value: Any
    conflict: bool


def resolve(entries: list[Entry]) -> Resolved:
    """The value of the largest (ts, device, seq); in conflict when the values' canonical bytes
    are not all equal."""
    if not entries:
        return Resolved(None, False)
    winner = max(entries, key=lambda e: (e[2], e[0], e[1]))
    return Resolved(winner[3], len({encode(e[3]) for e in entries}) > 1)


# --- a reference's view (merge.md §5.1) -----------------------------------------------------------


def covered_dots(seen: dict[str, list[Any]]) -> list[list[Any]]:
    """What a delete writes into "deleted": every dot of its seen map, once, sorted."""
    return [list(d) for d in sorted({(d[0], d[1]) for lst in seen.values() for d in lst})]


class View(NamedTuple):
    data: dict[str, Any]
    conflicts: list[str]
    deleted: bool


def reference_view(state: State) -> View:
    data: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in sorted(state):
        if name == DELETED:
            continue
        value, conflict = resolve(state[name])
        if value is not None:
            data[name] = value
        if conflict:
            conflicts.append(name)
    marks = [e for e in state.get(DELETED, []) if e[3] is not None]
    if not marks:
        return View(data, conflicts, False)
    covered = {(d[0], d[1]) for e in marks for d in e[3]}
    if any((e[0], e[1]) not in covered for name, es in state.items() if name != DELETED for e in es):
        return View(data, sorted([*conflicts, DELETED]), False)
    return View(data, conflicts, True)


# --- what a writer logs (merge.md §3.3, §5.3) -----------------------------------------------------


def put_fields(kind: str, key: str, obj_id: str, state: State, changes: dict[str, Any]) -> Op | None:
    """Every field whose register would change, with every dot of its register as seen."""
    fields: dict[str, Any] = {}
    seen: dict[str, list[Any]] = {}
    for name, value in changes.items():
        entries = state.get(name, [])
        unchanged = value is None if not entries else len(entries) == 1 and encode(entries[0][3]) == encode(value)
        if unchanged:
            continue
        fields[name] = value
        if entries:
            seen[name] = dots(entries)
    return {"op": kind, key: obj_id, "fields": fields, "seen": seen} if fields else None


def delete_ref(ref: str, state: State) -> Op:
    return {"op": REF_DELETE, "ref": ref, "seen": {n: dots(e) for n, e in state.items() if e}}


def delete_group(group: str, state: State, members: dict[str, list[Any]]) -> Op:
    return {"op": GROUP_DELETE, "group": group, "seen": {n: dots(e) for n, e in state.items() if e}, "members": members}
