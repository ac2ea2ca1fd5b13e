"""Vectors (f), whole exchanges: what a receive into an empty library applies, skips and keeps waiting."""

from __future__ import annotations

from typing import Any

from vectors_model import rules
from vectors_model.canonical_text import encode
from vectors_model.replica import Replica, model_receive
from vectors_model.scenario import Scenario
from vectors_model.spec import LIB, RX, TS, A, D, b64, device_add
from vectors_model.wires import (
    body_of,
    signed_wire,
    wire_field,
)


def exchange_vectors(sc: Scenario) -> list[dict[str, Any]]:
    """Whole exchanges (store/sync.receive) into empty libraries: what is applied, skipped, waits."""
    s = sc.sets
    tampered = encode({"body": body_of(s["A2"]), "sig": b64(s["A1"].signature)})

    def run(name: str, steps: list[tuple[str, list[tuple[str, bytes]]]]) -> dict[str, Any]:
        replica = Replica(None)
        out = []
        for what, wires in steps:
            report = model_receive(replica, [w for _, w in wires])
            out.append(
                {
                    "what": what,
                    "deliver": [{"label": label, **wire_field(w)} for label, w in wires],
                    "report": report,
                    "version_vector_after": dict(sorted(replica.vv.items())),
                }
            )
        return {"name": name, "library_id": LIB, "steps": out}

    revoke_d = {
        "v": 1,
        "lib": LIB,
        "author": A.id,
        "seq": [11, 11],
        "prev": s["A2"].id,
        "deps": {},
        "entries": [[11, TS, {"op": rules.DEVICE_REVOKE, "device": D.id, "upto": 0}]],
    }
    d_joins = {
        "v": 1,
        "lib": LIB,
        "author": D.id,
        "seq": [1, 1],
        "prev": None,
        "deps": {A.id: 10},
        "entries": [[1, TS + 1, device_add(D, A)]],
    }
    deleted_first = {
        "v": 1,
        "lib": LIB,
        "author": A.id,
        "seq": [11, 12],
        "prev": s["A2"].id,
        "deps": {},
        "entries": [
            [11, TS, {"op": rules.REF_DELETE, "ref": RX, "seen": {}}],
            [12, TS + 1, {"op": rules.REF_PUT, "ref": RX, "fields": {"title": "Written after its delete"}, "seen": {}}],
        ],
    }
    return [
        run(
            "blocking and waiting",
            [
                (
                    "A1 applies; A2 has a bad signature, so A is blocked for the rest of the exchange and A3 is "
                    "skipped without a report; B1 waits for A:10",
                    [
                        ("A1", s["A1"].wire()),
                        ("A2 with A1's signature", tampered),
                        ("A3", s["A3"].wire()),
                        ("B1", s["B1"].wire()),
                    ],
                ),
                (
                    "a parse rejection does not block anyone; A1 is a duplicate; B1 arrives before what it depends on "
                    "and is applied as soon as A2 is",
                    [
                        ("not JSON", b"{"),
                        ("A1", s["A1"].wire()),
                        ("B1", s["B1"].wire()),
                        ("A2", s["A2"].wire()),
                        ("A3", s["A3"].wire()),
                    ],
                ),
            ],
        ),
        run(
            "the successor of a waiting change set",
            [
                (
                    "C1 waits for A:10; C2, which needs A:14 and B:6, waits behind it (the deps are checked before "
                    "the sequence, so it is not a gap); A1 and A2 apply, then C1; A3 and B1 apply, then C2",
                    [
                        ("C1", s["C1"].wire()),
                        ("C2", s["C2"].wire()),
                        ("A1", s["A1"].wire()),
                        ("A2", s["A2"].wire()),
                        ("A3", s["A3"].wire()),
                        ("B1", s["B1"].wire()),
                    ],
                )
            ],
        ),
        run(
            "change sets of one author out of chain order",
            [
                (
                    "C2 arrives before C1 and waits for A:14 and B:6; C1 waits behind it; once A3 and B1 are applied "
                    "C2 is checked first and fails the gap check, which blocks C and drops C1: a sender must send "
                    "each author's change sets in chain order",
                    [
                        ("C2", s["C2"].wire()),
                        ("C1", s["C1"].wire()),
                        ("A1", s["A1"].wire()),
                        ("A2", s["A2"].wire()),
                        ("A3", s["A3"].wire()),
                        ("B1", s["B1"].wire()),
                    ],
                )
            ],
        ),
        run(
            "a revocation that arrives before its device is known",
            [
                (
                    "A revokes D (upto 0) before anyone has introduced D; the revocation is kept, so D's "
                    "self-introduction, signed by A, is refused as revoked",
                    [
                        ("A1", s["A1"].wire()),
                        ("A2", s["A2"].wire()),
                        ("A: device.revoke D upto 0", signed_wire(revoke_d, A)),
                        ("D1: D introduces itself", signed_wire(d_joins, D)),
                    ],
                )
            ],
        ),
        run(
            "a reference deleted before it is first written",
            [
                (
                    "A deletes a reference no one holds, then writes it, in one change set: both apply (the delete "
                    "mark had not seen the write, so the reference is shown, in conflict on 'deleted')",
                    [
                        ("A1", s["A1"].wire()),
                        ("A2", s["A2"].wire()),
                        ("A: ref.delete then ref.put of a new reference", signed_wire(deleted_first, A)),
                    ],
                )
            ],
        ),
    ]
