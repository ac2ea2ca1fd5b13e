"""Vectors (f): change sets that must be refused, one case per rule, each with its receiver and the
expected reason and stage (parse or check), or the outcome when it is not refused.
"""

from __future__ import annotations

import copy
from typing import Any

from vectors_model import rules
from vectors_model.canonical_text import encode
from vectors_model.changesets import Outcome
from vectors_model.exchange_cases import exchange_vectors
from vectors_model.replica import Replica
from vectors_model.scenario import Scenario
from vectors_model.spec import (
    LIB,
    RA,
    RD,
    RE,
    TS,
    A,
    B,
    C,
    D,
    Device,
    E,
    G,
    b64,
    device_add,
    introduction_message,
    library_id_for,
)
from vectors_model.wires import (
    body_of,
    context,
    expected_result,
    loose_wire,
    non_canonical_b64,
    observer,
    parse_stage,
    runs_bytes,
    signed_wire,
    wire_field,
)


def rejection_vectors(sc: Scenario) -> dict[str, Any]:
    s = sc.sets
    a1, a2, a3, a4, b1, c1, c2 = s["A1"], s["A2"], s["A3"], s["A4"], s["B1"], s["C1"], s["C2"]
    empty = Replica(None)
    after_a1 = observer([a1])
    after_a2 = observer([a1, a2])
    final = sc.replicas["A"]
    revoked_early = observer([a1, a2])
    revoked_early.world.revocations[C.id] = 3
    revoked_unknown = observer([a1, a2])
    revoked_unknown.world.revocations[D.id] = 0  # a revocation that arrived before D was known is kept
    replicas = {
        "empty": empty,
        "after A1": after_a1,
        "after A1 A2": after_a2,
        "final": final,
        "after A1 A2, C revoked upto 3": revoked_early,
        "after A1 A2, D (not yet known) revoked upto 0": revoked_unknown,
    }
    contexts = {name: context(replica, name) for name, replica in replicas.items()}
    next_a = {  # a well-formed next change set of A after A1 A2 (seq 11)
        "v": 1,
        "lib": LIB,
        "author": A.id,
        "seq": [11, 11],
        "prev": a2.id,
        "deps": {},
        "entries": [[11, TS, {"op": rules.REF_PUT, "ref": RE, "fields": {"title": "A new one"}, "seen": {}}]],
    }
    final_a = {  # a well-formed next change set of A in the final state
        "v": 1,
        "lib": LIB,
        "author": A.id,
        "seq": [a4.last + 1, a4.last + 1],
        "prev": a4.id,
        "deps": dict(sorted((k, v) for k, v in final.vv.items() if k != A.id)),
        "entries": [],
    }
    ref_put = {"op": rules.REF_PUT, "ref": RE, "fields": {"title": "From a newcomer"}, "seen": {}}

    def tweak(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
        out = copy.deepcopy(base)
        out.update(changes)
        return out

    def with_entries(base: dict[str, Any], entries: list[Any], first: int | None = None) -> dict[str, Any]:
        first = entries[0][0] if first is None else first
        return tweak(base, entries=entries, seq=[first, first + len(entries) - 1])

    def with_op(base: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
        return with_entries(base, [[base["seq"][0], TS, op]])

    def title_seen(*dots: list[Any]) -> dict[str, Any]:
        return {"op": rules.REF_PUT, "ref": RE, "fields": {"title": "Replaced"}, "seen": {"title": list(dots)}}

    def newcomer(first_op: dict[str, Any], author: Device = D, deps: dict[str, int] | None = None) -> dict[str, Any]:
        return {
            "v": 1,
            "lib": LIB,
            "author": author.id,
            "seq": [1, 2],
            "prev": None,
            "deps": deps or {},
            "entries": [[1, TS, first_op], [2, TS + 1, ref_put]],
        }

    bad_intro = device_add(D, A) | {"signature": b64(B.sign(introduction_message(LIB, D.id, D.public)))}
    c_next = {
        "v": 1,
        "lib": LIB,
        "author": C.id,
        "seq": [c2.last + 1, c2.last + 1],
        "prev": c2.id,
        "deps": dict(sorted((k, v) for k, v in final.vv.items() if k != C.id)),
        "entries": [[c2.last + 1, TS, {"op": rules.REF_PUT, "ref": RA, "fields": {"volume": "12"}, "seen": {}}]],
    }
    a1_body = body_of(a1)
    a2_body = body_of(a2)
    forked = tweak(a2_body)
    forked["entries"][0][1] += 1  # same sequence numbers, different content
    forked_with_deps = tweak(forked, deps={B.id: 5})
    zero_sig = encode({"body": forked, "sig": b64(bytes(64))})
    swapped_sig = encode({"body": body_of(a3), "sig": b64(a2.signature)})
    too_many = tweak(a1_body, seq=[1, 1001], entries=[0] * 1001)
    long_ts = tweak(a1_body)
    long_ts["entries"][0][1] = rules.MAX_TS + 1
    float_seq = tweak(a1_body)
    float_seq["entries"][0][0] = 1.0
    marker = "Placeholder for a lone surrogate"
    lone_surrogate = signed_wire(
        with_op(next_a, {"op": rules.REF_PUT, "ref": RE, "fields": {"title": marker}, "seen": {}}), A
    ).replace(marker.encode("ascii"), b"\\ud800")
    stranger = {
        "v": 1,
        "lib": LIB,
        "author": E.id,
        "seq": [5, 5],
        "prev": a2.id,
        "deps": {},
        "entries": [[5, TS, ref_put]],
    }
    deep = [['{"body":', 1], ["[", 100_000], ["]", 100_000], [',"sig":""}', 1]]

    cases: list[tuple[str, str, bytes | list[list[Any]], str]] = [
        # parse: form checks that need no receiver state, in the order the receiver makes them
        ("larger than MAX_BYTES", "empty", [[" ", rules.MAX_BYTES + 1]], "oversized"),
        ("not JSON", "empty", b'{"body": ', "malformed"),
        ("not UTF-8", "empty", b'{"body": "\xff"}', "malformed"),
        ("nested 100,000 levels deep", "empty", deep, "malformed"),
        ("not an object", "empty", b"[]", "malformed"),
        ("unknown top-level key", "empty", encode({"body": a1_body, "sig": b64(a1.signature), "x": 1}), "malformed"),
        ("body without deps", "empty", signed_wire({k: v for k, v in a1_body.items() if k != "deps"}, A), "malformed"),
        ("protocol version 2", "empty", signed_wire(tweak(a1_body, v=2), A), "version"),
        ("protocol version 1.0 (not the integer 1)", "empty", loose_wire(tweak(a1_body, v=1.0), A), "version"),
        ("protocol version true", "empty", loose_wire(tweak(a1_body, v=True), A), "version"),
        (
            "another library",
            "empty",
            signed_wire(tweak(a1_body, lib=library_id_for(E.public)), A, library_id_for(E.public)),
            "library",
        ),
        ("version is checked before library", "empty", signed_wire(tweak(a1_body, v=2, lib="x"), A, "x"), "version"),
        ("author is not 32 characters", "empty", signed_wire(tweak(a1_body, author=A.id[:31]), A), "malformed"),
        ("author in lower case", "empty", signed_wire(tweak(a1_body, author=A.id.lower()), A), "malformed"),
        ("sequence range starts at 0", "empty", signed_wire(tweak(a1_body, seq=[0, 2]), A), "malformed"),
        ("sequence range reversed", "empty", signed_wire(tweak(a2_body, seq=[10, 4]), A), "malformed"),
        (
            "sequence number above 2^53",
            "empty",
            signed_wire(tweak(a2_body, seq=[4, rules.MAX_TS + 1]), A),
            "malformed",
        ),
        ("prev in upper-case hex", "empty", signed_wire(tweak(a2_body, prev=a1.id.upper()), A), "malformed"),
        ("prev given at sequence 1", "empty", signed_wire(tweak(a1_body, prev=a1.id), A), "chain"),
        ("prev missing after sequence 1", "empty", signed_wire(tweak(a2_body, prev=None), A), "chain"),
        ("deps name the author", "empty", signed_wire(tweak(a2_body, deps={A.id: 3}), A), "malformed"),
        ("deps with sequence 0", "empty", signed_wire(tweak(a2_body, deps={B.id: 0}), A), "malformed"),
        (
            "deps keyed by a non-device id",
            "empty",
            signed_wire(tweak(a2_body, deps={B.id[:31] + "1": 1}), A),
            "malformed",
        ),
        ("no entries", "empty", signed_wire(tweak(a1_body, entries=[]), A), "oversized"),
        ("entries not a list", "empty", signed_wire(tweak(a1_body, entries={}), A), "oversized"),
        ("1001 entries", "empty", signed_wire(too_many, A), "oversized"),
        ("entries do not match the range", "empty", signed_wire(tweak(a1_body, seq=[1, 4]), A), "malformed"),
        (
            "entry sequence out of order",
            "empty",
            signed_wire(
                tweak(a1_body, entries=[a1_body["entries"][1], a1_body["entries"][0], a1_body["entries"][2]]), A
            ),
            "malformed",
        ),
        ("entry number written 1.0", "empty", loose_wire(float_seq, A), "malformed"),
        ("timestamp above 2^53", "empty", signed_wire(long_ts, A), "malformed"),
        ("unknown operation", "empty", signed_wire(with_op(next_a, {"op": "ref.move", "ref": RE}), A), "schema"),
        (
            "field value not in normal form",
            "empty",
            signed_wire(
                with_op(next_a, {"op": rules.REF_PUT, "ref": RE, "fields": {"title": "  Two  spaces "}, "seen": {}}), A
            ),
            "schema",
        ),
        (
            "unknown field",
            "empty",
            signed_wire(with_op(next_a, {"op": rules.REF_PUT, "ref": RE, "fields": {"colour": "red"}, "seen": {}}), A),
            "schema",
        ),
        (
            "object id with a trailing newline",
            "empty",
            signed_wire(with_op(next_a, ref_put | {"ref": RE + "\n"}), A),
            "schema",
        ),
        (
            "device.add key in non-canonical base64",
            "empty",
            signed_wire(with_op(next_a, device_add(D, A) | {"key": non_canonical_b64(b64(D.public))}), A),
            "schema",
        ),
        (
            "attachment name with the reserved prefix .p2psync, after a valid entry",
            "empty",
            signed_wire(
                with_entries(
                    next_a,
                    [
                        next_a["entries"][0],
                        [
                            12,
                            TS + 1,
                            {
                                "op": rules.ATTACHMENT_PUT,
                                "ref": RE,
                                "name": ".p2psync-versions",
                                "value": None,
                                "seen": [],
                            },
                        ],
                    ],
                ),
                A,
            ),
            "schema",
        ),
        ("signature not base64", "empty", encode({"body": a1_body, "sig": "not base64!"}), "signature"),
        ("signature of 32 bytes", "empty", encode({"body": a1_body, "sig": b64(bytes(32))}), "signature"),
        ("signature missing (null)", "empty", encode({"body": a1_body, "sig": None}), "signature"),
        (
            "signature in non-canonical base64 (unused bits set)",
            "empty",
            encode({"body": a1_body, "sig": non_canonical_b64(b64(a1.signature))}),
            "signature",
        ),
        ("a field holding text that is not Unicode (an escaped lone surrogate)", "empty", lone_surrogate, "malformed"),
        (
            "seen names an entry of another device that deps do not cover",
            "empty",
            signed_wire(with_op(next_a, title_seen([B.id, 1])), A),
            "schema",
        ),
        (
            "seen names one entry past deps",
            "empty",
            signed_wire(with_op(tweak(next_a, deps={B.id: 6}), title_seen([B.id, 7])), A),
            "schema",
        ),
        (
            "seen names the entry itself",
            "empty",
            signed_wire(with_op(next_a, title_seen([A.id, 11])), A),
            "schema",
        ),
        (
            "group.delete members name an entry that deps do not cover",
            "empty",
            signed_wire(
                with_op(
                    tweak(next_a, deps={B.id: 6}),
                    {"op": rules.GROUP_DELETE, "group": G, "seen": {"name": [[A.id, 8]]}, "members": {RA: [[C.id, 1]]}},
                ),
                A,
            ),
            "schema",
        ),
        # check: against the receiver's state, in order
        ("waits for what it depends on", "after A1", b1.wire(), "waiting"),
        (
            "a member's signature is checked before waiting for its dependencies",
            "after A1",
            encode({"body": body_of(b1), "sig": b64(bytes(64))}),
            "signature",
        ),
        (
            "seen within deps passes the parse stage, then waits for deps",
            "after A1 A2",
            signed_wire(with_op(tweak(next_a, deps={B.id: 6}), title_seen([B.id, 6], [A.id, 10])), A),
            "waiting",
        ),
        (
            "author not a member",
            "after A1 A2",
            signed_wire(newcomer(ref_put | {"ref": RD}, author=E), E),
            "unknown_author",
        ),
        (
            "a non-member is refused before the sequence is looked at",
            "after A1 A2",
            signed_wire(stranger, E),
            "unknown_author",
        ),
        (
            "founding claim by a key that did not found the library",
            "after A1 A2",
            signed_wire(newcomer(device_add(E, None), author=E), E),
            "unknown_author",
        ),
        (
            "introduced by a device that is not a member",
            "after A1 A2",
            signed_wire(newcomer(device_add(D, E)), D),
            "unknown_author",
        ),
        ("introduced by a revoked device", "final", signed_wire(newcomer(device_add(D, C)), D), "unknown_author"),
        ("introduction signed by the wrong key", "after A1 A2", signed_wire(newcomer(bad_intro), D), "signature"),
        ("bad signature", "after A1 A2", swapped_sig, "signature"),
        ("signed for another library id", "after A1 A2", signed_wire(next_a, A, library_id_for(E.public)), "signature"),
        (
            "a forged change set under used sequence numbers: the signature is checked before fork",
            "after A1 A2",
            zero_sig,
            "signature",
        ),
        (
            "the same body with a bad signature is not a duplicate",
            "after A1 A2",
            encode({"body": a2_body, "sig": b64(bytes(64))}),
            "signature",
        ),
        ("the same change set again", "after A1 A2", a2.wire(), "duplicate"),
        ("different change set under used sequence numbers", "after A1 A2", signed_wire(forked, A), "fork"),
        (
            "deps are not waited for under used sequence numbers",
            "after A1 A2",
            signed_wire(forked_with_deps, A),
            "fork",
        ),
        ("sequence gap", "after A1", a3.wire(), "gap"),
        ("prev is not the chain head", "after A1 A2", signed_wire(tweak(next_a, prev=a1.id), A), "chain"),
        ("past the revocation cut-off", "final", signed_wire(c_next, C), "revoked"),
        ("straddling the cut-off: rejected whole", "after A1 A2, C revoked upto 3", c1.wire(), "revoked"),
        (
            "revoked before it was known: its self-introduction is refused",
            "after A1 A2, D (not yet known) revoked upto 0",
            signed_wire(newcomer(device_add(D, A), deps={A.id: 10}), D),
            "revoked",
        ),
        (
            "device.add with a bad introduction inside a member's change set",
            "after A1 A2",
            signed_wire(with_op(next_a, bad_intro), A),
            "membership",
        ),
        (
            "device.add introduced by a non-member inside a member's change set",
            "after A1 A2",
            signed_wire(with_op(next_a, device_add(D, E)), A),
            "membership",
        ),
        (
            "device.add introduced by a revoked device inside another member's change set",
            "final",
            signed_wire(with_op(final_a, device_add(D, C)), A),
            "membership",
        ),
        (
            "founding device.add that is not the first entry",
            "after A1 A2",
            signed_wire(with_entries(next_a, [next_a["entries"][0], [12, TS + 1, device_add(A, None)]]), A),
            "membership",
        ),
        (
            "founding device.add for another device",
            "after A1 A2",
            signed_wire(with_op(next_a, device_add(D, None)), A),
            "membership",
        ),
        ("founding change set", "empty", a1.wire(), "new"),
        ("next change set of a member", "after A1 A2", signed_wire(next_a, A), "new"),
        (
            "seen names the author's own earlier entry",
            "after A1 A2",
            signed_wire(with_op(next_a, title_seen([A.id, 10])), A),
            "new",
        ),
        (
            "newcomer introducing itself with a valid introduction",
            "after A1 A2",
            signed_wire(newcomer(device_add(D, A), deps={A.id: 10}), D),
            "new",
        ),
        (
            "a revoked device's own introduction of another, before its cut-off",
            "after A1 A2, C revoked upto 3",
            signed_wire(
                {
                    "v": 1,
                    "lib": LIB,
                    "author": C.id,
                    "seq": [1, 1],
                    "prev": None,
                    "deps": {A.id: 10},
                    "entries": [[1, TS, device_add(D, C)]],
                },
                C,
            ),
            "new",
        ),
    ]
    out = []
    for name, ctx_name, wire, expected in cases:
        raw = runs_bytes(wire) if isinstance(wire, list) else wire
        replica = replicas[ctx_name]
        got = expected_result(raw, replica)
        if got != expected:
            raise SystemExit(f"rejection case {name!r}: expected {expected}, the model says {got}")
        record: dict[str, Any] = {"name": name, "receiver": ctx_name}
        if isinstance(wire, list):
            record["wire_runs"] = wire
        else:
            record.update(wire_field(raw))
        if expected in (Outcome.NEW, Outcome.DUPLICATE, Outcome.WAITING):
            record["expected"] = {"outcome": expected}
        else:
            record["expected"] = {"reason": expected, "stage": parse_stage(raw, replica)}
        out.append(record)
    return {
        "description": "Each case: the bytes that arrive, the receiver's context, and the expected result of "
        "changesets.parse(wire, library) then changesets.check(cs, receiver): a rejection reason (stage 'parse' or "
        "'check') or an outcome (new, duplicate, waiting). founder_check(key) is library_id_for(key) == library. "
        "The bytes are wire_text (encode as UTF-8), wire_hex, or wire_runs: [[text, count], ...], each text "
        "repeated count times, concatenated, encoded as UTF-8. revoked_upto may name devices that are not members "
        "(a revocation is kept even before its device is known).",
        "receivers": contexts,
        "cases": out,
        "exchanges": exchange_vectors(sc),
    }
