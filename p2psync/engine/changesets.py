"""Change sets: runs of one device's log entries, signed, chained, and checked on arrival.

Sans-IO: building takes entries and a signing function; checking takes the bytes that arrived and
what the receiver knows (its version vector, the author's chain head, the membership) and either
returns the parsed change set or raises ChangeSetRejected naming what is wrong. Nothing here
reads a database or a socket. The normative description is protocol/changesets.md.

Wire form (canonical JSON, see canonical.py):

    {"body": {"v": 1, "lib": LIBRARY, "author": DEVICE, "seq": [FIRST, LAST], "prev": ID|null,
              "deps": {DEVICE: SEQ, ...}, "entries": [[SEQ, TS, OP], ...]},
     "sig": BASE64(Ed25519(DOMAIN || LIB || 0x00 || SHA-256(canonical(body))))}

    id(change set) = hex(SHA-256(canonical(body)))      prev = id of the author's previous one
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from p2psync.engine import ops
from p2psync.engine.canonical import encode, loads
from p2psync.errors import InvalidInput
from p2psync.model.devices import is_device_id

VERSION = 1
DOMAIN = b"p2psync/1 change set\x00"
MAX_ENTRIES = 1_000  # per change set
MAX_BYTES = 4 * 1024 * 1024  # one change set on the wire
TARGET_BYTES = 1024 * 1024  # what a sealer aims for; MAX_BYTES leaves room for one huge entry
MAX_DEPS = 10_000
MAX_TS = ops.MAX_INT  # timestamps are integers JSON can carry exactly

Entry = tuple[int, int, dict[str, Any]]  # seq, ts, op
Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes], bool]  # public key, signature, message


class Reason(StrEnum):
    """Why a change set was refused: the stable codes of protocol/changesets.md (recorded for
    `status`, sent in reports). Members are strings, so they compare and encode as their codes."""

    VERSION = "version"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    SCHEMA = "schema"
    LIBRARY = "library"
    SIGNATURE = "signature"
    UNKNOWN_AUTHOR = "unknown_author"
    MEMBERSHIP = "membership"
    FORK = "fork"
    GAP = "gap"
    CHAIN = "chain"
    REVOKED = "revoked"


class ChangeSetRejected(InvalidInput):
    """A change set failed a check; nothing of it was applied. `reason` is a stable code."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)


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
    body_bytes: bytes  # canonical(body): what was signed, stored and forwarded unchanged
    body_digest: bytes = b""  # SHA-256 of body_bytes: hashed once, for the id and the signature

    def __post_init__(self) -> None:
        if not self.body_digest:
            object.__setattr__(self, "body_digest", hashlib.sha256(self.body_bytes).digest())

    @property
    def id(self) -> str:
        return self.body_digest.hex()

    def wire(self) -> bytes:
        """The bytes that travel: canonical JSON of {"body", "sig"}."""
        return wire_bytes(self.body_bytes, self.signature)


def signature_input(library: str, body_bytes: bytes) -> bytes:
    """What is signed: the domain, the library, and the SHA-256 of the body (signing a 32-byte
    digest instead of a megabyte of body halves what a first sync spends on Ed25519, which
    hashes its whole input twice)."""
    return digest_input(library, hashlib.sha256(body_bytes).digest())


def digest_input(library: str, body_digest: bytes) -> bytes:
    """signature_input, given the body's SHA-256."""
    return DOMAIN + library.encode("ascii") + b"\x00" + body_digest


def change_set_id(body_bytes: bytes) -> str:
    return hashlib.sha256(body_bytes).hexdigest()


# --- building -----------------------------------------------------------------------------------


def split(
    entries: Iterable[Entry], max_entries: int = MAX_ENTRIES, target_bytes: int = TARGET_BYTES
) -> list[list[Entry]]:
    """Cut a run of entries into change-set-sized pieces (bounded count and size)."""
    items = list(entries)
    return split_by_cost(items, [len(encode(op)) for _, _, op in items], max_entries, target_bytes)


T = TypeVar("T")


def split_by_cost(
    items: list[T], op_bytes: list[int], max_entries: int = MAX_ENTRIES, target_bytes: int = TARGET_BYTES
) -> list[list[T]]:
    """The splitting rule: an entry costs its operation's canonical UTF-8 length + 32 bytes; a new
    piece starts when the current one holds max_entries or would pass target_bytes."""
    pieces = split_stream(zip(items, op_bytes, strict=True), lambda pair: pair[1], max_entries, target_bytes)
    return [[item for item, _ in piece] for piece in pieces]


def split_stream(
    items: Iterable[T], op_bytes: Callable[[T], int], max_entries: int = MAX_ENTRIES, target_bytes: int = TARGET_BYTES
) -> Iterator[list[T]]:
    """split_by_cost as it reads: each piece is yielded once the next item does not fit, so a
    sealer holds one piece in memory, not the whole backlog."""
    current: list[T] = []
    size = 0
    for item in items:
        cost = op_bytes(item) + 32
        if current and (len(current) >= max_entries or size + cost > target_bytes):
            yield current
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        yield current


def entry_item(seq: int, ts: int, op_bytes: bytes) -> bytes:
    """One element of a body's entries array: canonical [seq, ts, op] from the op's canonical bytes."""
    return b"[%d,%d,%s]" % (seq, ts, op_bytes)


def assemble_body(
    library: str, author: str, prev: str | None, deps: Mapping[str, int], items: Sequence[bytes]
) -> bytes:
    """The canonical body bytes, put together from entry_item()s (in order, at least one).

    Equal to encode(body) (keys in sorted order: author, deps, entries, lib, prev, seq, v), but
    without decoding and re-encoding every operation: sealing and sending stay cheap (the store
    builds the items from the log's canonical operation texts).
    """
    first = int(items[0][1 : items[0].index(b",")])
    last = int(items[-1][1 : items[-1].index(b",")])
    dep_map = {d: s for d, s in sorted(deps.items()) if d != author and s > 0}
    return b"".join(
        (
            b'{"author":',
            encode(author),
            b',"deps":',
            encode(dep_map),
            b',"entries":[',
            b",".join(items),
            b'],"lib":',
            encode(library),
            b',"prev":',
            encode(prev),
            b',"seq":[%d,%d],"v":%d}' % (first, last, VERSION),
        )
    )


def wire_bytes(body_bytes: bytes, signature: bytes) -> bytes:
    return b"".join((b'{"body":', body_bytes, b',"sig":"', base64.b64encode(signature), b'"}'))  # one copy


def build(
    library: str, author: str, prev: str | None, deps: Mapping[str, int], entries: list[Entry], sign: Signer
) -> ChangeSet:
    """Seal a contiguous run of the author's entries into a signed change set."""
    if not entries:
        raise ValueError("a change set needs at least one entry")
    dep_map = {d: s for d, s in sorted(deps.items()) if d != author and s > 0}
    body_bytes = assemble_body(library, author, prev, dep_map, [entry_item(s, t, encode(op)) for s, t, op in entries])
    if len(body_bytes) > MAX_BYTES - 200:
        raise ValueError("change set too large; split the entries first")
    body_digest = hashlib.sha256(body_bytes).digest()
    return ChangeSet(
        library,
        author,
        entries[0][0],
        entries[-1][0],
        prev,
        dep_map,
        list(entries),
        sign(digest_input(library, body_digest)),
        body_bytes,
        body_digest,
    )


# --- checking -----------------------------------------------------------------------------------


def parse(raw: bytes, library: str) -> ChangeSet:
    """Decode and check the form of a change set (everything that needs no receiver state)."""
    if len(raw) > MAX_BYTES:
        raise ChangeSetRejected(
            Reason.OVERSIZED, f"A change set of {len(raw):,} bytes exceeds the limit of {MAX_BYTES:,}."
        )
    try:
        message = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ChangeSetRejected(Reason.MALFORMED, "A change set is not valid JSON.") from None
    if not isinstance(message, dict) or set(message) != {"body", "sig"} or not isinstance(message["body"], dict):
        raise ChangeSetRejected(Reason.MALFORMED, "A change set must be an object with exactly 'body' and 'sig'.")
    body = message["body"]
    if set(body) != {"v", "lib", "author", "seq", "prev", "deps", "entries"}:
        raise ChangeSetRejected(Reason.MALFORMED, "A change set body has missing or unknown keys.")
    if type(body["v"]) is not int or body["v"] != VERSION:
        raise ChangeSetRejected(
            Reason.VERSION, f"A change set uses protocol version {body['v']!r}; this p2psync speaks {VERSION}."
        )
    if body["lib"] != library:
        raise ChangeSetRejected(Reason.LIBRARY, "A change set belongs to another library.")
    author = body["author"]
    if not is_device_id(author):
        raise ChangeSetRejected(Reason.MALFORMED, "A change set's author is not a device id.")
    seq = body["seq"]
    if not (isinstance(seq, list) and len(seq) == 2 and all(_is_count(s) for s in seq) and 1 <= seq[0] <= seq[1]):
        raise ChangeSetRejected(
            Reason.MALFORMED, "A change set's sequence range is not [first, last] with 1 <= first <= last."
        )
    prev = body["prev"]
    if not (prev is None or (isinstance(prev, str) and len(prev) == 64 and _is_hex(prev))):
        raise ChangeSetRejected(Reason.MALFORMED, "A change set's prev is not a SHA-256 in hex.")
    if (prev is None) != (seq[0] == 1):
        raise ChangeSetRejected(Reason.CHAIN, "A change set's prev must be null exactly when it starts at sequence 1.")
    deps = body["deps"]
    if (
        not isinstance(deps, dict)
        or len(deps) > MAX_DEPS
        or not all(is_device_id(d) and d != author and _is_count(s) and s >= 1 for d, s in deps.items())
    ):
        raise ChangeSetRejected(Reason.MALFORMED, "A change set's deps must map other device ids to sequence numbers.")
    raw_entries = body["entries"]
    if not isinstance(raw_entries, list) or not 1 <= len(raw_entries) <= MAX_ENTRIES:
        raise ChangeSetRejected(Reason.OVERSIZED, f"A change set holds 1 to {MAX_ENTRIES} entries.")
    if len(raw_entries) != seq[1] - seq[0] + 1:
        raise ChangeSetRejected(Reason.MALFORMED, "A change set's entries do not match its sequence range.")
    # Leading entries that create references from nothing are proven in C, when it is built
    # (p2psync/_speedups.c); these need no causality check either, having seen nothing.
    proven = ops._speedups.proven_ref_puts(raw_entries, seq[0]) if ops._speedups is not None else 0
    entries: list[Entry] = [(item[0], item[1], item[2]) for item in raw_entries[:proven]]
    for expected, item in enumerate(raw_entries[proven:], start=seq[0] + proven):
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and item[0] == expected
            and _is_count(item[1])
        ):
            raise ChangeSetRejected(
                Reason.MALFORMED, f"Entry {expected} of a change set is not [seq, ts, op] in order."
            )
        if item[1] > MAX_TS:
            raise ChangeSetRejected(Reason.MALFORMED, f"Entry {expected} of a change set has an impossible timestamp.")
        try:
            ops.check(item[2])
        except InvalidInput as exc:
            raise ChangeSetRejected(Reason.SCHEMA, f"Entry {expected} of a change set is invalid: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError):  # hostile shapes the checks did not foresee
            raise ChangeSetRejected(
                Reason.SCHEMA, f"Entry {expected} of a change set is not a valid operation."
            ) from None
        entries.append((item[0], item[1], item[2]))
    try:
        signature = base64.b64decode(message["sig"], validate=True) if isinstance(message["sig"], str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64 or base64.b64encode(signature).decode("ascii") != message["sig"]:
        raise ChangeSetRejected(Reason.SIGNATURE, "A change set's signature is missing or not 64 bytes of base64.")
    try:
        # The body's keys, deps and entries were all checked above, so encoding the decoded body
        # gives its canonical bytes (what was signed) in one call.
        body_bytes = encode(body)
    except (TypeError, ValueError):  # no canonical form (the parser already refuses lone surrogates)
        raise ChangeSetRejected(Reason.MALFORMED, "A change set holds text that is not valid Unicode.") from None
    _check_causality(author, deps, entries[proven:])
    return ChangeSet(library, author, seq[0], seq[1], prev, deps, entries, signature, body_bytes)


def _check_causality(author: str, deps: Mapping[str, int], entries: list[Entry]) -> None:
    """An entry may only replace what its author could have seen: its own earlier entries and
    what the change set depends on. Anything else would let replicas diverge."""
    for seq, _ts, op in entries:
        for device, dot_seq in ops.seen_dots(op):
            limit = seq - 1 if device == author else deps.get(device, 0)
            if dot_seq > limit:
                raise ChangeSetRejected(
                    Reason.SCHEMA, f"Entry {seq} of a change set replaces a change its author had not seen."
                )


@dataclass(frozen=True)
class Receiver:
    """What the receiving library knows, for the checks that need state."""

    version_vector: Mapping[str, int]  # device -> last sequence applied
    chain_heads: Mapping[str, str]  # device -> id of its last applied change set
    member_keys: Mapping[str, bytes]  # device -> Ed25519 public key, for members
    revoked_upto: Mapping[str, int]  # device -> last sequence still accepted from it
    known_id: Callable[[str, int], str | None]  # (author, first seq) -> id of the one we applied
    founder_check: Callable[[bytes], bool]  # key -> this key founded this library


class Outcome(StrEnum):
    """What checking a change set gave, when it was not refused."""

    NEW = "new"
    DUPLICATE = "duplicate"  # already have exactly this change set: nothing to do
    WAITING = "waiting"  # depends on something not applied yet


def check(cs: ChangeSet, receiver: Receiver, verify: Verifier) -> Outcome:
    """Check a parsed change set against the receiver's state; return an Outcome or raise.

    Order matters: nothing is judged on a change set's say-so before its signature is verified.
    A member's signature is checked even before waiting for dependencies, so a forgery cannot
    hold back that member's real change sets; only a device not known yet (whose introduction
    may be among the missing dependencies) can wait unverified, and that records nothing.
    """
    have = receiver.version_vector.get(cs.author, 0)
    key = receiver.member_keys.get(cs.author)
    if key is not None and not verify(key, cs.signature, digest_input(cs.library, cs.body_digest)):
        raise ChangeSetRejected(
            Reason.SIGNATURE, f"A change set claiming to be from {cs.author[:7]} has a bad signature."
        )
    if cs.first > have:
        for device, seq in cs.deps.items():
            if receiver.version_vector.get(device, 0) < seq:
                return Outcome.WAITING
    self_introduced = key is None
    if key is None:
        key = _self_introduction(cs, receiver, verify)
        if not verify(key, cs.signature, digest_input(cs.library, cs.body_digest)):
            raise ChangeSetRejected(
                Reason.SIGNATURE, f"A change set claiming to be from {cs.author[:7]} has a bad signature."
            )
    if cs.first <= have:
        # Authors cut their log once, so the same first sequence means the same change set.
        if receiver.known_id(cs.author, cs.first) == cs.id:
            return Outcome.DUPLICATE
        raise ChangeSetRejected(
            Reason.FORK, f"Device {cs.author[:7]} sent different changes under sequence numbers already used; refused."
        )
    if cs.first > have + 1:
        raise ChangeSetRejected(
            Reason.GAP,
            f"A change set from {cs.author[:7]} starts at {cs.first} but {have + 1} is the next one expected.",
        )
    if cs.prev != receiver.chain_heads.get(cs.author):
        raise ChangeSetRejected(
            Reason.CHAIN, f"A change set from {cs.author[:7]} does not continue that device's chain."
        )
    if cs.last > receiver.revoked_upto.get(cs.author, cs.last):
        raise ChangeSetRejected(
            Reason.REVOKED, f"Device {cs.author[:7]} was removed from this library; its new changes are refused."
        )
    _check_introductions(cs, receiver, key, verify, skip_first=self_introduced)
    return Outcome.NEW


def _check_introductions(
    cs: ChangeSet, receiver: Receiver, author_key: bytes, verify: Verifier, skip_first: bool
) -> None:
    """Every device.add inside must carry a valid signature by its introducer.

    skip_first: entry 0 is the author's own introduction, already verified by _self_introduction.
    """
    keys = dict(receiver.member_keys)
    keys[cs.author] = author_key
    for index, (seq, _ts, op) in enumerate(cs.entries):
        if op["op"] != ops.DEVICE_ADD or (skip_first and index == 0):
            continue
        new_key = base64.b64decode(op["key"])
        if op["introducer"] is None:
            if not (index == 0 and op["device"] == cs.author and receiver.founder_check(new_key)):
                raise ChangeSetRejected(
                    Reason.MEMBERSHIP, f"Entry {seq} claims a device founded this library; it did not."
                )
        else:
            introducer_key = keys.get(op["introducer"])
            if op["introducer"] != cs.author and op["introducer"] in receiver.revoked_upto:
                introducer_key = None  # a removed device introduces no one (but its own past entries stand)
            message = introduction(cs.library, op["device"], new_key)
            if introducer_key is None or not verify(introducer_key, base64.b64decode(op["signature"]), message):
                raise ChangeSetRejected(Reason.MEMBERSHIP, f"Entry {seq} adds a device without a valid introduction.")
        keys[op["device"]] = new_key


def _self_introduction(cs: ChangeSet, receiver: Receiver, verify: Verifier) -> bytes:
    """A non-member's change set is acceptable only if it opens with its own introduction."""
    op = cs.entries[0][2]
    if op.get("op") != ops.DEVICE_ADD or op.get("device") != cs.author:
        raise ChangeSetRejected(Reason.UNKNOWN_AUTHOR, f"Device {cs.author[:7]} is not a member of this library.")
    key = base64.b64decode(op["key"])
    introducer = op["introducer"]
    if introducer is None:
        if not receiver.founder_check(key):
            raise ChangeSetRejected(
                Reason.UNKNOWN_AUTHOR, f"Device {cs.author[:7]} claims to have founded this library; it did not."
            )
        return key
    introducer_key = receiver.member_keys.get(introducer)
    if introducer_key is None or receiver.revoked_upto.get(introducer) is not None:
        raise ChangeSetRejected(
            Reason.UNKNOWN_AUTHOR, f"Device {cs.author[:7]} was introduced by a device that is not a member."
        )
    if not verify(introducer_key, base64.b64decode(op["signature"]), introduction(cs.library, cs.author, key)):
        raise ChangeSetRejected(Reason.SIGNATURE, f"The introduction of device {cs.author[:7]} has a bad signature.")
    return key


def introduction(library: str, device: str, public_key: bytes) -> bytes:
    """What a member signs to introduce a new device (domain-separated)."""
    return (
        b"p2psync/1 device introduction\x00"
        + library.encode("ascii")
        + b"\x00"
        + device.encode("ascii")
        + b"\x00"
        + public_key
    )


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TS


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
