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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2psync.engine.canonical import dumps

Dot = tuple[str, int]
Entry = list[Any]  # [device: str, seq: int, ts: int, value: Any]


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
    winner = max(entries, key=lambda e: (e[2], e[0], e[1]))
    distinct = {dumps(e[3]) for e in entries}
    return Resolved(winner[3], len(distinct) > 1)


def changed(entries: list[Entry], value: Any) -> bool:
    """Would writing `value` change what the register holds? (No-op edits are not logged.)"""
    if not entries:
        return value is not None
    return len(entries) > 1 or dumps(entries[0][3]) != dumps(value)
