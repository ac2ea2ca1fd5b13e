"""Bytes that arrive, made for the rejection and exchange cases: signed or loose wires, the
receiver contexts, and the expected result of parse then check.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from vectors_model import changesets
from vectors_model.canonical_text import encode
from vectors_model.changesets import ChangeSet, ChangeSetRejected
from vectors_model.replica import Replica, model_receive
from vectors_model.spec import LIB, Device, b64, signature_input, verify


def signed_wire(body: dict[str, Any], signer: Device, library: str = LIB) -> bytes:
    body_bytes = encode(body)
    return encode({"body": body, "sig": b64(signer.sign(signature_input(library, body_bytes)))})


def loose_wire(body: dict[str, Any], signer: Device) -> bytes:
    """A wire with values the protocol does not have (1.0, true for a number): JSON as Python writes it, key
    order and separators as in canonical JSON, signed over the body text as written."""

    def dumps(value: Any) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    sig = b64(signer.sign(signature_input(LIB, dumps(body))))
    return b'{"body":' + dumps(body) + b',"sig":"' + sig.encode("ascii") + b'"}'


def non_canonical_b64(text: str) -> str:
    """The same bytes in base64 with unused bits set: the character before the padding, plus one."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    cut = len(text.rstrip("=")) - 1
    changed = text[:cut] + alphabet[alphabet.index(text[cut]) + 1] + text[cut + 1 :]
    assert changed != text and base64.b64decode(changed) == base64.b64decode(text)
    return changed


def body_of(cs: ChangeSet) -> dict[str, Any]:
    return copy.deepcopy(json.loads(cs.body_bytes))


def context(replica: Replica, name: str) -> dict[str, Any]:
    r = replica.receiver()
    return {
        "name": name,
        "library": replica.library,
        "version_vector": dict(sorted(r.version_vector.items())),
        "chain_heads": dict(sorted(r.chain_heads.items())),
        "member_keys": {d: b64(k) for d, k in sorted(r.member_keys.items())},
        "revoked_upto": dict(sorted(r.revoked_upto.items())),
        "known_change_sets": sorted([cs.author, cs.first, cs.id] for cs in replica.held),
    }


def observer(sets: list[ChangeSet]) -> Replica:
    replica = Replica(None)
    report = model_receive(replica, [cs.wire() for cs in sets])
    assert report["applied"] == len(sets), report
    return replica


def runs_bytes(runs: list[list[Any]]) -> bytes:
    return "".join(text * count for text, count in runs).encode("utf-8")


def wire_field(raw: bytes) -> dict[str, str]:
    """The bytes as text when they are UTF-8 (exact: encode it again), else as hex."""
    try:
        return {"wire_text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"wire_hex": raw.hex()}


def expected_result(raw: bytes, replica: Replica) -> str:
    try:
        cs = changesets.parse(raw, replica.library)
        return changesets.check(cs, replica.receiver(), verify)
    except ChangeSetRejected as exc:
        return exc.reason


def parse_stage(raw: bytes, replica: Replica) -> str:
    try:
        changesets.parse(raw, replica.library)
    except ChangeSetRejected:
        return "parse"
    return "check"
