"""Vectors (d): single change sets with every intermediate value, and the split of a log into
change sets at the protocol's limits.
"""

from __future__ import annotations

from typing import Any

from vectors_model import changesets, op_schema, rules
from vectors_model.canonical_text import encode
from vectors_model.scenario import (
    Scenario,
    changeset_record,
)
from vectors_model.spec import LIB, RA, T0, A


def single_changeset_vectors(sc: Scenario) -> dict[str, Any]:
    return {
        "description": "Change sets taken from the scenario, with every intermediate value: body -> canonical body "
        "bytes -> signature input -> Ed25519 signature -> id -> wire bytes. changesets.build(library, author, prev, "
        "deps, entries, sign) must give exactly these bytes.",
        "changesets": [changeset_record(sc.sets[name], detailed=True) | {"name": name} for name in ("A1", "C2")],
        "split": split_vectors(),
        "limits": {
            "MAX_BYTES": rules.MAX_BYTES,
            "MAX_ENTRIES": rules.MAX_ENTRIES,
            "TARGET_BYTES": rules.TARGET_BYTES,
            "MAX_DEPS": rules.MAX_DEPS,
            "MAX_TS": rules.MAX_TS,
            "MAX_INT": rules.MAX_INT,
            "MAX_OP_BYTES": rules.MAX_OP_BYTES,
            "MAX_DOTS": rules.MAX_DOTS,
            "MAX_REFS_PER_OP": rules.MAX_REFS_PER_OP,
        },
    }


def split_vectors() -> list[dict[str, Any]]:
    """changesets.split with the protocol's limits. Every entry is a ref.put whose only field is a 'notes'
    text of `length` copies of `char`; `entries` and `entry_costs` are run-length encoded: [[value, count], ...]."""

    def op_for(char: str, length: int) -> dict[str, Any]:
        return {"op": rules.REF_PUT, "ref": RA, "fields": {"notes": char * length}, "seen": {}}

    def runs(values: list[int]) -> list[list[int]]:
        out: list[list[int]] = []
        for v in values:
            if out and out[-1][0] == v:
                out[-1][1] += 1
            else:
                out.append([v, 1])
        return out

    exact = rules.TARGET_BYTES // 2 - 32 - len(encode(op_for("n", 0)))
    largest = (rules.MAX_OP_BYTES - len(encode(op_for("n", 0)))) // 4  # 4-byte characters, within MAX_OP_BYTES
    cases: list[tuple[str, str, list[int]]] = [
        ("1001 small entries: at most 1000 per change set", "n", [1] * 1001),
        ("two entries filling the target exactly stay together", "n", [exact, exact]),
        ("one byte more starts a new change set", "n", [exact, exact + 1]),
        ("an entry larger than the target gets a change set of its own", "\u00e9", [10, 1_000_000, 10]),
        (
            "an entry of almost MAX_OP_BYTES, the largest a writer may log, still fits a change set",
            "\U0001f600",
            [10, largest, 10],
        ),
    ]
    out = []
    for name, char, lengths in cases:
        entries = [(i + 1, T0 + i, op_for(char, n)) for i, n in enumerate(lengths)]
        for entry in entries:
            assert op_schema.is_valid(entry[2])
        pieces = changesets.split(entries)
        for piece in pieces:
            changesets.build(LIB, A.id, None if piece[0][0] == 1 else "0" * 64, {}, piece, A.sign)
        if any(len(encode(e[2])) > rules.MAX_OP_BYTES for e in entries):
            raise SystemExit(f"split case {name!r}: an entry is larger than a writer may log")
        out.append(
            {
                "name": name,
                "op_template": {
                    "op": rules.REF_PUT,
                    "ref": RA,
                    "fields": {"notes": "<char repeated length times>"},
                    "seen": {},
                },
                "char": char,
                "entries": runs(lengths),
                "entry_costs": runs([len(encode(e[2])) + 32 for e in entries]),
                "pieces": [len(p) for p in pieces],
            }
        )
    return out
