"""Change sets as changesets.md describes them, modelled from the spec: build and split (§5, §7),
then the two stages a receiver runs, parse (§8.1, P1-P17) and check (§8.2, C0-C8, with the
introductions of §10). A refusal raises ChangeSetRejected with the stable reason code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vectors_model import op_schema, rules
from vectors_model.canonical_text import encode
from vectors_model.spec import introduction_message, signature_input

Entry = tuple[int, int, dict[str, Any]]  # seq, ts, op
Verifier = Callable[[bytes, bytes, bytes], bool]  # public key, signature, message


class ChangeSetRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Outcome:
    NEW, DUPLICATE, WAITING = "new", "duplicate", "waiting"


@dataclass(frozen=True)
class ChangeSet:
    library: str
    author: str
    first: int
    last: int
    prev: str | None
    deps: dict[str, int]
    entries: list[Entry]
    signature: bytes
    body_bytes: bytes  # canonical(body)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.body_bytes).hexdigest()

    def wire(self) -> bytes:
        """canonical({"body": body, "sig": base64(signature)})"""
        return b'{"body":' + self.body_bytes + b',"sig":"' + base64.b64encode(self.signature) + b'"}'


# --- sealing (§5, §7) -------------------------------------------------------------------------------


def split(entries: list[Entry]) -> list[list[Entry]]:
    """§7.1: an entry costs len(canonical(op)) + 32; a new piece starts when the current one holds
    MAX_ENTRIES or would cost more than TARGET_BYTES with it."""
    pieces: list[list[Entry]] = []
    size = 0
    for entry in entries:
        cost = len(encode(entry[2])) + 32
        if not pieces or len(pieces[-1]) >= rules.MAX_ENTRIES or size + cost > rules.TARGET_BYTES:
            pieces.append([])
            size = 0
        pieces[-1].append(entry)
        size += cost
    return pieces


def build(
    library: str,
    author: str,
    prev: str | None,
    vv: Mapping[str, int],
    entries: list[Entry],
    sign: Callable[[bytes], bytes],
) -> ChangeSet:
    """§5: deps are the author's version vector without itself and zeros; the signature is over
    signature_input(lib, canonical(body))."""
    deps = {d: s for d, s in sorted(vv.items()) if d != author and s > 0}
    first, last = entries[0][0], entries[-1][0]
    body = {
        "v": 1,
        "lib": library,
        "author": author,
        "seq": [first, last],
        "prev": prev,
        "deps": deps,
        "entries": [list(e) for e in entries],
    }
    body_bytes = encode(body)
    if len(body_bytes) > rules.MAX_BYTES - 200:
        raise ValueError("change set too large")
    signature = sign(signature_input(library, body_bytes))
    return ChangeSet(library, author, first, last, prev, deps, list(entries), signature, body_bytes)


# --- parse (§8.1) -----------------------------------------------------------------------------------


def _lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= rules.MAX_TS


def parse(raw: bytes, library: str) -> ChangeSet:
    if len(raw) > rules.MAX_BYTES:  # P1
        raise ChangeSetRejected("oversized")
    try:  # P2
        message = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ChangeSetRejected("malformed") from None
    if _lone_surrogate(message):
        raise ChangeSetRejected("malformed")
    if not isinstance(message, dict) or set(message) != {"body", "sig"} or not isinstance(message["body"], dict):
        raise ChangeSetRejected("malformed")  # P3
    body = message["body"]
    if set(body) != {"v", "lib", "author", "seq", "prev", "deps", "entries"}:
        raise ChangeSetRejected("malformed")  # P4
    if type(body["v"]) is not int or body["v"] != 1:
        raise ChangeSetRejected("version")  # P5
    if body["lib"] != library:
        raise ChangeSetRejected("library")  # P6
    author = body["author"]
    if not op_schema.is_device_id(author):
        raise ChangeSetRejected("malformed")  # P7
    seq = body["seq"]
    if not (isinstance(seq, list) and len(seq) == 2 and all(map(_is_count, seq)) and 1 <= seq[0] <= seq[1]):
        raise ChangeSetRejected("malformed")  # P8
    prev = body["prev"]
    if not (prev is None or (isinstance(prev, str) and re.fullmatch(r"[0-9a-f]{64}", prev))):
        raise ChangeSetRejected("malformed")  # P9
    if (prev is None) != (seq[0] == 1):
        raise ChangeSetRejected("chain")  # P10
    deps = body["deps"]
    if (
        not isinstance(deps, dict)
        or len(deps) > rules.MAX_DEPS
        or not all(op_schema.is_device_id(d) and d != author and _is_count(s) and s >= 1 for d, s in deps.items())
    ):
        raise ChangeSetRejected("malformed")  # P11
    items = body["entries"]
    if not isinstance(items, list) or not 1 <= len(items) <= rules.MAX_ENTRIES:
        raise ChangeSetRejected("oversized")  # P12
    if len(items) != seq[1] - seq[0] + 1:
        raise ChangeSetRejected("malformed")  # P13
    for expected, item in enumerate(items, start=seq[0]):  # P14
        if not (isinstance(item, list) and len(item) == 3 and type(item[0]) is int and item[0] == expected):
            raise ChangeSetRejected("malformed")
        if not _is_count(item[1]):
            raise ChangeSetRejected("malformed")
        if not op_schema.is_valid(item[2]):
            raise ChangeSetRejected("schema")
    sig = message["sig"]
    try:  # P15
        signature = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64 or base64.b64encode(signature).decode("ascii") != sig:
        raise ChangeSetRejected("signature")
    for s, _ts, op in items:  # P17
        for device, dot_seq in op_schema.seen_dots(op):
            if dot_seq > (s - 1 if device == author else deps.get(device, 0)):
                raise ChangeSetRejected("schema")
    entries: list[Entry] = [(s, ts, op) for s, ts, op in items]
    return ChangeSet(library, author, seq[0], seq[1], prev, deps, entries, signature, encode(body))


# --- check (§8.2, §10) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receiver:
    version_vector: Mapping[str, int]
    chain_heads: Mapping[str, str]
    member_keys: Mapping[str, bytes]
    revoked_upto: Mapping[str, int]
    known_id: Callable[[str, int], str | None]
    founder_check: Callable[[bytes], bool]


def check(cs: ChangeSet, receiver: Receiver, verify: Verifier) -> str:
    have = receiver.version_vector.get(cs.author, 0)
    signed = signature_input(cs.library, cs.body_bytes)
    key = receiver.member_keys.get(cs.author)
    if key is not None and not verify(key, cs.signature, signed):
        raise ChangeSetRejected("signature")  # C0
    if cs.first > have and any(receiver.version_vector.get(d, 0) < s for d, s in cs.deps.items()):
        return Outcome.WAITING  # C1
    newcomer = key is None
    if key is None:
        key = _self_introduction(cs, receiver, verify)  # C2
        if not verify(key, cs.signature, signed):
            raise ChangeSetRejected("signature")  # C3
    if cs.first <= have:  # C4
        if receiver.known_id(cs.author, cs.first) == cs.id:
            return Outcome.DUPLICATE
        raise ChangeSetRejected("fork")
    if cs.first > have + 1:
        raise ChangeSetRejected("gap")  # C5
    if cs.prev != receiver.chain_heads.get(cs.author):
        raise ChangeSetRejected("chain")  # C6
    if cs.last > receiver.revoked_upto.get(cs.author, cs.last):
        raise ChangeSetRejected("revoked")  # C7
    _check_introductions(cs, receiver, key, verify, skip_first=newcomer)  # C8
    return Outcome.NEW


def _self_introduction(cs: ChangeSet, receiver: Receiver, verify: Verifier) -> bytes:
    """§10.3: a non-member's change set opens with its own device.add, by the founder's key or
    introduced by a member that is not revoked."""
    op = cs.entries[0][2]
    if op["op"] != rules.DEVICE_ADD or op["device"] != cs.author:
        raise ChangeSetRejected("unknown_author")
    key = base64.b64decode(op["key"])
    if op["introducer"] is None:
        if not receiver.founder_check(key):
            raise ChangeSetRejected("unknown_author")
        return key
    introducer_key = receiver.member_keys.get(op["introducer"])
    if introducer_key is None or op["introducer"] in receiver.revoked_upto:
        raise ChangeSetRejected("unknown_author")
    if not verify(introducer_key, base64.b64decode(op["signature"]), introduction_message(cs.library, cs.author, key)):
        raise ChangeSetRejected("signature")
    return key


def _check_introductions(
    cs: ChangeSet, receiver: Receiver, author_key: bytes, verify: Verifier, skip_first: bool
) -> None:
    """§10.2: every device.add is the founder's own first entry or signed by an introducer that is
    a member (or introduced earlier in this change set) and not revoked (unless it is the author)."""
    keys = {**receiver.member_keys, cs.author: author_key}
    for index, (_seq, _ts, op) in enumerate(cs.entries):
        if op["op"] != rules.DEVICE_ADD or (skip_first and index == 0):
            continue
        new_key = base64.b64decode(op["key"])
        if op["introducer"] is None:
            if not (index == 0 and op["device"] == cs.author and receiver.founder_check(new_key)):
                raise ChangeSetRejected("membership")
        else:
            introducer_key = keys.get(op["introducer"])
            if op["introducer"] != cs.author and op["introducer"] in receiver.revoked_upto:
                introducer_key = None
            message = introduction_message(cs.library, op["device"], new_key)
            if introducer_key is None or not verify(introducer_key, base64.b64decode(op["signature"]), message):
                raise ChangeSetRejected("membership")
        keys[op["device"]] = new_key
