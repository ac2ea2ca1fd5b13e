"""Multi-value registers: the merge rule for every field of every object.

A register holds the set of values written concurrently, each tagged with its dot (the device
and sequence number of the log entry that wrote it) and that entry's timestamp:

    [[device, seq, ts, value], ...]   kept sorted by (device, seq)

A write names the dots its author had seen and replaces exactly those. One entry left: the field
has one value. Two or more with different values: the field is in conflict; every version is
kept, and the provisional value shown is the one with the largest (ts, device, seq), so every
machine shows the same one. Add-wins sets (group membership) are registers whose values are all
`true`: an element is present while any add it has not seen-removed survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from p2psync.engine.canonical import dumps

Dot = tuple[str, int]


class RegisterEntry(NamedTuple):
    """One value of a register, read by name. Registers store, send and compare their entries
    as the JSON lists [device, seq, ts, value] (Entry: JSON has no tuples, orjson encodes no
    NamedTuple, and the vectors compare lists); RegisterEntry(*entry) reads one."""

    device: str
    seq: int
    ts: int
    value: Any


Entry = list[Any]  # [device, seq, ts, value], as stored and on the wire


def order_key(entry: Sequence[Any]) -> tuple[int, str, int]:
    """THE order of a register's entries: (ts, device, seq). The largest is the provisional
    value every machine shows; conflict listings show versions in this order."""
    return (entry[2], entry[0], entry[1])


def dots(entries: Iterable[Entry]) -> list[list[Any]]:
    """The dots of a register's entries, in the wire form [[device, seq], ...]."""
    return [[e[0], e[1]] for e in entries]


def write(entries: list[Entry], dot: Dot, ts: int, value: Any, seen: Iterable[Any]) -> list[Entry]:
    """Apply one write: drop the seen entries, add the new one. Pure; idempotent per dot."""
    seen_set = {(d[0], d[1]) for d in seen}
    kept = [e for e in entries if (e[0], e[1]) not in seen_set and (e[0], e[1]) != dot]
    kept.append([dot[0], dot[1], ts, value])
    kept.sort(key=lambda e: (e[0], e[1]))
    return kept


def remove(entries: list[Entry], seen: Iterable[Any]) -> list[Entry]:
    """Drop the seen entries (a delete, or an add-wins remove)."""
    seen_set = {(d[0], d[1]) for d in seen}
    return [e for e in entries if (e[0], e[1]) not in seen_set]


@dataclass(frozen=True)
class Resolved:
    value: Any
    conflict: bool


def resolve(entries: list[Entry]) -> Resolved:
    """The value shown for a register and whether its concurrent values disagree."""
    if not entries:
        return Resolved(None, False)
    if len(entries) == 1:
        return Resolved(entries[0][3], False)
    winner = RegisterEntry(*max(entries, key=order_key))
    distinct = {dumps(e[3]) for e in entries}
    return Resolved(winner.value, len(distinct) > 1)


def changed(entries: list[Entry], value: Any) -> bool:
    """Would writing `value` change what the register holds? (No-op edits are not logged.)"""
    if not entries:
        return value is not None
    return len(entries) > 1 or dumps(entries[0][3]) != dumps(value)


def pack(state: dict[str, list[Entry]]) -> dict[str, Any]:
    """The stored form of an object's registers: each dot once, values not repeated.

    {"d": [[device, seq, ts], ...] sorted, "r": {name: [i] | [[i, value], [j, value], ...]}}
    A register with one entry stores only the index of its dot: its value is the provisional
    value, kept once beside it (data). Registers with several entries keep every value. Most
    references were written by one entry, so this stores one dot instead of one per field.
    """
    all_dots = sorted({(e[0], e[1], e[2]) for entries in state.values() for e in entries})
    index = {dot: i for i, dot in enumerate(all_dots)}
    packed: dict[str, Any] = {}
    for name in sorted(state):
        entries = state[name]
        if len(entries) == 1:
            packed[name] = [index[(entries[0][0], entries[0][1], entries[0][2])]]
        elif entries:
            packed[name] = [[index[(e[0], e[1], e[2])], e[3]] for e in entries]
    return {"d": [list(d) for d in all_dots], "r": packed}


def unpack(stored: dict[str, Any], data: dict[str, Any]) -> dict[str, list[Entry]]:
    """The inverse of pack, given the provisional values."""
    all_dots = stored["d"]
    state: dict[str, list[Entry]] = {}
    for name, items in stored["r"].items():
        if len(items) == 1 and isinstance(items[0], int):
            state[name] = [[*all_dots[items[0]], data.get(name)]]
        else:
            state[name] = [[*all_dots[i], value] for i, value in items]
    return state
