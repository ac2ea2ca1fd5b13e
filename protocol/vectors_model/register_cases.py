"""Vectors: multi-value registers, covered dots and the reference view (merge.md)."""

from __future__ import annotations

import copy
from typing import Any

from vectors_model import rules
from vectors_model.rules import State
from vectors_model.spec import T0, A, B, C


def register_vectors() -> dict[str, Any]:
    a, b, c = A.id, B.id, C.id
    resolve_cases: list[tuple[str, list[rules.Entry]]] = [
        ("empty register", []),
        ("one entry", [[a, 1, T0, "x"]]),
        ("one entry holding null", [[a, 1, T0, None]]),
        ("two entries, same value: no conflict", [[a, 5, T0 + 9, "x"], [b, 2, T0, "x"]]),
        ("largest ts wins", [[a, 5, T0 + 1, "from A"], [b, 2, T0 + 2, "from B"]]),
        ("equal ts: larger device id wins", [[a, 5, T0, "from A"], [b, 2, T0, "from B"], [c, 9, T0, "from C"]]),
        ("equal ts and device: larger seq wins", [[a, 5, T0, "five"], [a, 7, T0, "seven"]]),
        ("null against a value is a conflict", [[a, 5, T0 + 1, None], [b, 2, T0, "kept"]]),
        (
            "objects compared by canonical form",
            [[a, 1, T0, {"family": "Curie", "given": "Marie"}], [b, 1, T0, {"given": "Marie", "family": "Curie"}]],
        ),
        ("ts compared as integers, not text", [[a, 1, 999, "small"], [b, 1, 1000, "large"]]),
    ]
    write_cases = [
        ("write into an empty register", [], [b, 3], T0, "new", []),
        ("write replaces exactly the seen entries", [[a, 1, T0, "x"], [c, 4, T0, "y"]], [b, 3], T0 + 5, "z", [[a, 1]]),
        ("unseen dots in seen are ignored", [[a, 1, T0, "x"]], [b, 3], T0 + 5, "z", [[a, 1], [c, 9]]),
        ("writing the same dot again replaces it (idempotent)", [[a, 1, T0, "x"]], [a, 1], T0, "x", []),
    ]
    remove_cases = [
        ("remove the seen entries", [[a, 1, T0, True], [b, 2, T0, True]], [[a, 1]]),
        ("remove what is not there", [[a, 1, T0, True]], [[b, 2]]),
    ]
    view_cases: list[tuple[str, State]] = [
        ("no delete", {"title": [[a, 1, T0, "T"]], "year": [[a, 1, T0, "2021"], [b, 1, T0, "2020"]]}),
        ("delete that saw everything", {"title": [[a, 1, T0, "T"]], "deleted": [[b, 2, T0, [[a, 1]]]]}),
        (
            "edit the delete had not seen: conflict on deleted",
            {"title": [[a, 1, T0, "T"]], "notes": [[c, 1, T0, "N"]], "deleted": [[b, 2, T0, [[a, 1]]]]},
        ),
        (
            "two concurrent deletes cover together",
            {
                "title": [[a, 1, T0, "T"]],
                "notes": [[c, 1, T0, "N"]],
                "deleted": [[a, 2, T0, [[a, 1]]], [b, 2, T0, [[c, 1]]]],
            },
        ),
        ("a kept reference (deleted = null)", {"title": [[a, 1, T0, "T"]], "deleted": [[c, 3, T0, None]]}),
        ("a null field is not shown", {"title": [[a, 1, T0, None]], "year": [[a, 1, T0, "2021"]]}),
        (
            "deleted with a field conflict covered",
            {"title": [[a, 1, T0, "T"], [b, 1, T0, "U"]], "deleted": [[c, 5, T0, [[a, 1], [b, 1]]]]},
        ),
    ]
    covered_cases = [
        ("sorted, duplicates once", {"title": [[b, 2], [a, 1]], "year": [[a, 1]], "deleted": [[c, 3]]}),
    ]
    return {
        "description": "Multi-value registers (engine/registers.py) and the reference view (engine/merge.py). An "
        "entry is [device, seq, ts, value]; a dot is [device, seq].",
        "resolve": [
            {"name": n, "entries": e, "value": (r := rules.resolve(e)).value, "conflict": r.conflict}
            for n, e in resolve_cases
        ],
        "write": [
            {
                "name": n,
                "entries": e,
                "dot": d,
                "ts": t,
                "value": v,
                "seen": s,
                "result": rules.write(copy.deepcopy(e), (d[0], d[1]), t, v, s),
            }
            for n, e, d, t, v, s in write_cases
        ],
        "remove": [{"name": n, "entries": e, "seen": s, "result": rules.remove(e, s)} for n, e, s in remove_cases],
        "covered_dots": [{"name": n, "seen": s, "result": rules.covered_dots(s)} for n, s in covered_cases],
        "reference_view": [
            {
                "name": n,
                "state": s,
                "data": (v := rules.reference_view(s)).data,
                "conflicts": v.conflicts,
                "deleted": v.deleted,
            }
            for n, s in view_cases
        ],
    }
