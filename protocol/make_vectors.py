#!/usr/bin/env python3
"""Generate the p2psync/1 known-answer test vectors in protocol/vectors/.

Everything is fixed: Ed25519 keys come from fixed 32-byte seeds (seed(name) = SHA-256 of
"p2psync/1 test vector seed " + name), timestamps and object ids are constants, and Ed25519
signatures are deterministic, so two runs write byte-identical files.

The expected states are computed here with the engine's pure functions only (registers, merge,
ops, changesets): no SQLite. tests/test_vectors.py replays the same change sets through the real
store and compares. Identities, canonical bytes and signature inputs are computed from the recipes
in protocol/*.md and checked against the code while generating, so a drift between the spec and
the code stops the generator.

Usage: python protocol/make_vectors.py [--out DIR]      (default: protocol/vectors beside this file)
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2psync.engine import canonical, changesets, merge, ops, registers
from p2psync.engine.changesets import ChangeSet, ChangeSetRejected, Outcome, Receiver
from p2psync.errors import InvalidInput
from p2psync.model import attachments, chunking
from p2psync.net import chunks as net_chunks

sys.path.insert(0, str(Path(__file__).resolve().parent))  # relay_vectors.py, beside this file
import relay_key_vectors  # relay.md §5: devices and key epochs, written apart from p2psync
import relay_vectors

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in milliseconds
TS = T0 + 300_000  # the timestamp of the entries made up for the rejection cases
Json = Any
State = dict[str, list[registers.Entry]]

# Object ids: 16 characters of a-z2-7 (model/ids.py ID_PATTERN).
RA, RB, RC, RD, RE = "refaaaaaaaaaaaaa", "refbbbbbbbbbbbbb", "refccccccccccccc", "refddddddddddddd", "refeeeeeeeeeeeee"
RX = "refxxxxxxxxxxxxx"  # only in the rejection exchanges
G, H = "grpggggggggggggg", "grphhhhhhhhhhhhh"


# --- recipes (as written in the spec), checked against the code --------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _spec_text(value: Json) -> str:
    """Canonical JSON as protocol/changesets.md describes it, written independently of json.dumps."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_spec_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(_spec_text(k) + ":" + _spec_text(value[k]) for k in sorted(value)) + "}"
    raise TypeError(f"not a protocol value: {value!r}")


def encode(value: Json) -> bytes:
    """canonical(value); stops if the spec's recipe and the code disagree."""
    ours = _spec_text(value).encode("utf-8")
    theirs = canonical.encode(value)
    if ours != theirs:
        raise SystemExit(f"canonical encoding differs from the spec for {value!r}")
    return ours


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seed(name: str) -> bytes:
    return hashlib.sha256(b"p2psync/1 test vector seed " + name.encode("ascii")).digest()


def device_id_for(public_key: bytes) -> str:
    return base64.b32encode(hashlib.sha256(public_key).digest()).decode("ascii")[:32]


def library_id_for(founder_key: bytes) -> str:
    digest = hashlib.sha256(b"p2psync/1 library\x00" + founder_key).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def introduction_message(library: str, device: str, public_key: bytes) -> bytes:
    message = b"p2psync/1 device introduction\x00" + library.encode() + b"\x00" + device.encode() + b"\x00" + public_key
    if message != changesets.introduction(library, device, public_key):
        raise SystemExit("introduction message differs from the spec")
    return message


def signature_input(library: str, body_bytes: bytes) -> bytes:
    data = b"p2psync/1 change set\x00" + library.encode("ascii") + b"\x00" + hashlib.sha256(body_bytes).digest()
    if data != changesets.signature_input(library, body_bytes):
        raise SystemExit("signature input differs from the spec")
    return data


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Device:
    name: str
    label: str  # the device name carried by its device.add
    key: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def id(self) -> str:
        return device_id_for(self.public)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def make_device(name: str, label: str) -> Device:
    return Device(name, label, Ed25519PrivateKey.from_private_bytes(seed(name)))


A = make_device("A", "laptop-a")
B = make_device("B", "laptop-b")
C = make_device("C", "desktop-c")
D = make_device("D", "tablet-d")  # joins by introducing itself (signed by A)
E = make_device("E", "stranger-e")  # never a member
LIB = library_id_for(A.public)
DEVICES = {d.id: d for d in (A, B, C, D, E)}
NAMES = {d.id: d.name for d in (A, B, C, D, E)}


def device_add(new: Device, introducer: Device | None, library: str = LIB) -> dict[str, Any]:
    signature = None
    if introducer is not None:
        signature = b64(introducer.sign(introduction_message(library, new.id, new.public)))
    return {
        "op": ops.DEVICE_ADD,
        "device": new.id,
        "key": b64(new.public),
        "name": new.label,
        "introducer": introducer.id if introducer else None,
        "signature": signature,
    }


# --- the replicated state, computed with the engine's pure functions ---------------------------


@dataclass
class World:
    """Everything a library holds that the log determines (the protocol state, no storage form)."""

    refs: dict[str, State] = field(default_factory=dict)
    groups: dict[str, State] = field(default_factory=dict)
    members: dict[tuple[str, str], list[registers.Entry]] = field(default_factory=dict)
    attachments: dict[tuple[str, str], list[registers.Entry]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    revocations: dict[str, int] = field(default_factory=dict)

    def _remove_member(self, group: str, ref: str, seen: list[Any]) -> None:
        left = registers.remove(self.members.get((group, ref), []), seen)
        if left:
            self.members[(group, ref)] = left
        else:
            self.members.pop((group, ref), None)

    def apply(self, device: str, seq: int, ts: int, op: dict[str, Any]) -> None:
        """One log entry; the same decisions as store/apply.py, in terms of registers."""
        dot = (device, seq)
        kind = op["op"]
        if kind in (ops.REF_PUT, ops.GROUP_PUT):
            table, key = (self.refs, "ref") if kind == ops.REF_PUT else (self.groups, "group")
            state = table.setdefault(op[key], {})
            for name, value in op["fields"].items():
                state[name] = registers.write(state.get(name, []), dot, ts, value, op["seen"].get(name, []))
        elif kind == ops.REF_DELETE:
            ref = op["ref"]
            state = self.refs.setdefault(ref, {})
            # Only the mark: memberships and attachments stay (hidden while the reference is deleted).
            state[merge.DELETED] = registers.write(
                state.get(merge.DELETED, []), dot, ts, merge.covered_dots(op["seen"]), op["seen"].get(merge.DELETED, [])
            )
        elif kind == ops.GROUP_DELETE:
            group = op["group"]
            state = self.groups.get(group, {})
            for name, seen in op["seen"].items():
                if name in state:
                    state[name] = registers.remove(state[name], seen)
            state = {name: entries for name, entries in state.items() if entries}
            if state:
                self.groups[group] = state
            else:
                self.groups.pop(group, None)
            for ref, seen in op["members"].items():
                self._remove_member(group, ref, seen)
        elif kind == ops.MEMBER_ADD:
            for ref in op["refs"]:
                key = (op["group"], ref)
                self.members[key] = registers.write(self.members.get(key, []), dot, ts, True, [])
        elif kind == ops.MEMBER_REMOVE:
            for ref, seen in op["seen"].items():
                self._remove_member(op["group"], ref, seen)
        elif kind == ops.ATTACHMENT_PUT:
            key = (op["ref"], op["name"])
            self.attachments[key] = registers.write(self.attachments.get(key, []), dot, ts, op["value"], op["seen"])
        elif kind == ops.DEVICE_ADD:
            known = self.devices.get(op["device"])
            if known is None:
                self.devices[op["device"]] = {
                    "public_key": op["key"],
                    "name": op["name"],
                    "introducer": op["introducer"],
                    "signature": op["signature"],
                    "dot": [device, seq],
                }
            elif (device, seq) < (known["dot"][0], known["dot"][1]):  # the smallest dot's introduction wins
                known.update(name=op["name"], introducer=op["introducer"], signature=op["signature"], dot=[device, seq])
        elif kind == ops.DEVICE_REVOKE:
            # Kept whether or not the device is known yet; several revocations keep the smallest cut-off.
            upto = self.revocations.get(op["device"])
            self.revocations[op["device"]] = op["upto"] if upto is None else min(upto, op["upto"])
        else:  # pragma: no cover
            raise ValueError(kind)

    def export(self) -> dict[str, Any]:
        """The expected state, in the form the vectors and tests/test_vectors.py use."""
        refs = {}
        for ref, state in sorted(self.refs.items()):
            view = merge.reference_view(state)
            refs[ref] = {
                "registers": {name: sorted(entries) for name, entries in sorted(state.items()) if entries},
                "data": view.data,
                "conflicts": view.conflicts,
                "deleted": view.deleted,
            }
        groups = {}
        for group, state in sorted(self.groups.items()):
            resolved = registers.resolve(state.get("name", []))
            groups[group] = {
                "registers": {name: sorted(entries) for name, entries in sorted(state.items())},
                "name": resolved.value,
                "conflict": resolved.conflict,
            }
        members: dict[str, dict[str, Any]] = {}
        for (group, ref), entries in sorted(self.members.items()):
            members.setdefault(group, {})[ref] = sorted(entries)
        attachments: dict[str, dict[str, Any]] = {}
        for (ref, name), entries in sorted(self.attachments.items()):
            resolved = registers.resolve(entries)
            attachments.setdefault(ref, {})[name] = {
                "register": sorted(entries),
                "value": resolved.value,
                "conflict": resolved.conflict,
            }
        return {
            "refs": refs,
            "groups": groups,
            "memberships": members,
            "attachments": attachments,
            "devices": {d: dict(v) for d, v in sorted(self.devices.items())},
            "revocations": dict(sorted(self.revocations.items())),
        }


# --- devices that edit, seal and exchange change sets (what store/sync.py does) ----------------


def model_receive(replica: Replica, wires: list[bytes]) -> dict[str, Any]:
    """store/sync.receive: parse; skip blocked authors; keep a list in arrival order and drain it."""
    report: dict[str, Any] = {"applied": 0, "entries": 0, "duplicates": 0, "rejected": [], "waiting": 0}
    waiting: list[ChangeSet] = []
    blocked: set[str] = set()

    def drain() -> None:
        progress = True
        while progress and waiting:
            progress = False
            stuck: set[str] = set()  # authors whose earliest waiting change set still waits
            for cs in list(waiting):
                if cs.author in blocked:
                    waiting.remove(cs)
                    continue
                if cs.author in stuck:
                    continue
                try:
                    outcome = changesets.check(cs, replica.receiver(), verify)
                except ChangeSetRejected as exc:
                    waiting.remove(cs)
                    blocked.add(cs.author)
                    report["rejected"].append(exc.reason)
                    continue
                if outcome == Outcome.WAITING:
                    stuck.add(cs.author)
                    continue
                waiting.remove(cs)
                if outcome == Outcome.DUPLICATE:
                    report["duplicates"] += 1
                else:
                    replica.apply_changeset(cs)
                    report["applied"] += 1
                    report["entries"] += len(cs.entries)
                    progress = True

    for wire in wires:
        try:
            cs = changesets.parse(wire, replica.library)
        except ChangeSetRejected as exc:
            report["rejected"].append(exc.reason)
            continue
        if cs.author not in blocked:
            waiting.append(cs)
            drain()
    report["waiting"] = len(waiting)
    return report


class Replica:
    """One library on one machine: its log, its change sets and its state (no SQL)."""

    def __init__(self, device: Device | None, library: str = LIB) -> None:
        self.device = device
        self.library = library
        self.world = World()
        self.own: list[changesets.Entry] = []  # this device's log entries
        self.sealed = 0
        self.clock = 0
        self.held: list[ChangeSet] = []  # every change set, in the order stored (respects deps)
        self.vv: dict[str, int] = {}
        self.heads: dict[str, str] = {}

    # local edits --------------------------------------------------------------------------
    def log(self, wall: int, op: dict[str, Any]) -> tuple[int, int]:
        assert self.device is not None
        ops.check(op)
        if len(encode(op)) > ops.MAX_OP_BYTES:  # store/library.Writer.log: every entry must fit a change set
            raise ValueError("operation too large to log")
        seq = len(self.own) + 1
        ts = max(wall, self.clock + 1)  # engine/clock.tick
        self.clock = ts
        self.own.append((seq, ts, op))
        self.world.apply(self.device.id, seq, ts, op)
        return seq, ts

    def add_ref(self, wall: int, ref: str, values: dict[str, Any]) -> None:
        ts = max(wall, self.clock + 1)
        self.log(wall, {"op": ops.REF_PUT, "ref": ref, "fields": {**values, "added": ts}, "seen": {}})

    def edit(self, wall: int, ref: str, changes: dict[str, Any]) -> None:
        op = ops.put_fields(ops.REF_PUT, "ref", ref, self.world.refs[ref], changes)
        assert op is not None
        self.log(wall, op)

    def delete_ref(self, wall: int, ref: str) -> None:
        self.log(wall, ops.delete_ref(ref, self.world.refs[ref]))

    def create_group(self, wall: int, group: str, name: str) -> None:
        self.log(wall, {"op": ops.GROUP_PUT, "group": group, "fields": {"name": name}, "seen": {}})

    def rename_group(self, wall: int, group: str, name: str) -> None:
        op = ops.put_fields(ops.GROUP_PUT, "group", group, self.world.groups[group], {"name": name})
        assert op is not None
        self.log(wall, op)

    def delete_group(self, wall: int, group: str) -> None:
        members = {r: registers.dots(e) for (g, r), e in sorted(self.world.members.items()) if g == group}
        self.log(wall, ops.delete_group(group, self.world.groups[group], members))

    def add_members(self, wall: int, group: str, refs: list[str]) -> None:
        self.log(wall, {"op": ops.MEMBER_ADD, "group": group, "refs": refs})

    def remove_members(self, wall: int, group: str, refs: list[str]) -> None:
        seen = {r: registers.dots(self.world.members[(group, r)]) for r in refs}
        self.log(wall, {"op": ops.MEMBER_REMOVE, "group": group, "seen": seen})

    def attach(self, wall: int, ref: str, name: str, manifest: dict[str, Any] | None) -> None:
        seen = registers.dots(self.world.attachments.get((ref, name), []))
        self.log(wall, {"op": ops.ATTACHMENT_PUT, "ref": ref, "name": name, "value": manifest, "seen": seen})

    def revoke(self, wall: int, device: Device) -> None:
        self.log(wall, {"op": ops.DEVICE_REVOKE, "device": device.id, "upto": self.vv.get(device.id, 0)})

    # change sets --------------------------------------------------------------------------
    def seal(self) -> list[ChangeSet]:
        assert self.device is not None
        made = []
        for piece in changesets.split(self.own[self.sealed :]):
            head = self.heads.get(self.device.id)
            cs = changesets.build(self.library, self.device.id, head, self.vv, piece, self.device.sign)
            signature_input(self.library, cs.body_bytes)
            self._store(cs)
            self.sealed = cs.last
            made.append(cs)
        return made

    def _store(self, cs: ChangeSet) -> None:
        self.held.append(cs)
        self.vv[cs.author] = cs.last
        self.heads[cs.author] = cs.id

    def apply_changeset(self, cs: ChangeSet) -> None:
        self._store(cs)
        for seq, ts, op in cs.entries:
            self.world.apply(cs.author, seq, ts, op)
            self.clock = max(self.clock, ts)

    def receiver(self) -> Receiver:
        devices = self.world.devices
        known = {(cs.author, cs.first): cs.id for cs in self.held}
        return Receiver(
            version_vector=dict(self.vv),
            chain_heads=dict(self.heads),
            member_keys={d: base64.b64decode(v["public_key"]) for d, v in devices.items()},
            revoked_upto=dict(self.world.revocations),
            known_id=lambda author, first: known.get((author, first)),
            founder_check=lambda key: library_id_for(key) == self.library,
        )

    def missing_for(self, other: Replica) -> list[bytes]:
        return [cs.wire() for cs in self.held if cs.last > other.vv.get(cs.author, 0)]


def sync(a: Replica, b: Replica) -> None:
    """store/sync.sync_libraries: both seal, b receives what it lacks, then a does."""
    a.seal()
    b.seal()
    for receiver, sender in ((b, a), (a, b)):
        report = model_receive(receiver, sender.missing_for(receiver))
        assert not report["rejected"] and not report["waiting"], report


# --- (a) canonical JSON --------------------------------------------------------------------------


def canonical_vectors() -> dict[str, Any]:
    valid = [
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("zero", "0"),
        ("negative integer", "-42"),
        ("2^53, the largest integer the protocol uses", "9007199254740992"),
        ("integer 2^53 + 1 (exact, no exponent)", "9007199254740993"),
        ("2^63 - 1: outside the protocol's range, still written exactly", "9223372036854775807"),
        ("minus zero is the integer 0", "-0"),
        ("empty string", '""'),
        ("ASCII text", '"Neuronal plasticity"'),
        ("non-ASCII kept as raw UTF-8 (2, 3 and 4 bytes)", '"Müller \\u2013 \\u6f22 \\ud83d\\ude00"'),
        ("escaped input is written raw", '"\\u00e9\\u0041"'),
        ("short escapes", '"quote \\" backslash \\\\ b\\b f\\f n\\n r\\r t\\t"'),
        ("other control characters as \\u00XX, lowercase hex", '"\\u0000\\u0001\\u001f"'),
        ("DEL, U+2028 and solidus are not escaped", '"\\u007f \\u2028 \\/"'),
        ("empty array", "[ ]"),
        ("empty object", "{ }"),
        ("nested, white space removed", '[ 1, [ 2, { "b" : [ ], "a" : { } } ], null ]'),
        ("keys sorted by code point: upper case before lower case", '{"b": 1, "a": 2, "B": 3, "A": 4}'),
        ('keys: "B" < "a" < "é"', '{"\\u00e9": 1, "a": 2, "B": 3}'),
        ("keys: a prefix sorts first", '{"ab": 1, "a\\u0000": 2, "a": 3, "": 4}'),
        ('keys: "10" < "9" (strings, not numbers)', '{"9": 1, "10": 2, "_": 3, "Z": 4}'),
        ("keys: code point order, not UTF-16 order (U+FB01 < U+1F600)", '{"\\ud83d\\ude00": 1, "\\ufb01": 2}'),
        ("keys sorted at every level", '{"z": {"y": 1, "x": [{"b": 2, "a": 1}]}, "a": null}'),
    ]
    cases = []
    for name, text in valid:
        value = json.loads(text)
        data = encode(value)
        cases.append(
            {"name": name, "input_json": text, "canonical_text": data.decode("utf-8"), "canonical_hex": data.hex()}
        )
    invalid = [
        ("NaN has no canonical form", "NaN"),
        ("Infinity has no canonical form", "[Infinity]"),
        ("a lone surrogate cannot be written in UTF-8", '"\\ud800"'),
    ]
    for _name, text in invalid:
        try:
            canonical.encode(canonical.loads(text))
        except ValueError:
            continue
        raise SystemExit(f"canonical.encode accepted {text}")
    return {
        "description": "canonical(value): parse input_json (a JSON text, deliberately not canonical), encode "
        "canonically, compare with canonical_hex (the bytes) and canonical_text (the same bytes as UTF-8).",
        "valid": cases,
        "invalid": [{"name": n, "input_json": t} for n, t in invalid],
    }


# --- (b) identity, (c) introductions --------------------------------------------------------------


def identity_vectors() -> dict[str, Any]:
    devices = []
    for dev in (A, B, C, D, E):
        digest = hashlib.sha256(dev.public).digest()
        devices.append(
            {
                "name": dev.name,
                "seed_input": f"p2psync/1 test vector seed {dev.name}",
                "seed_hex": seed(dev.name).hex(),
                "public_key_hex": dev.public.hex(),
                "public_key_base64": b64(dev.public),
                "sha256_public_key_hex": digest.hex(),
                "base32_sha256": base64.b32encode(digest).decode("ascii"),
                "device_id": dev.id,
                "short_id": dev.id[:7],
            }
        )
    founder_input = b"p2psync/1 library\x00" + A.public
    digest = hashlib.sha256(founder_input).digest()
    return {
        "description": "seed -> Ed25519 key pair (RFC 8032) -> device id; library id from the founder's public key.",
        "devices": devices,
        "library": {
            "founder": "A",
            "input_hex": founder_input.hex(),
            "sha256_hex": digest.hex(),
            "first_10_bytes_hex": digest[:10].hex(),
            "library_id": LIB,
        },
    }


def introduction_vectors() -> dict[str, Any]:
    cases = []
    for new, introducer in ((B, A), (C, A), (D, A)):
        message = introduction_message(LIB, new.id, new.public)
        signature = introducer.sign(message)
        op = device_add(new, introducer)
        cases.append(
            {
                "library": LIB,
                "device": new.name,
                "device_id": new.id,
                "public_key_hex": new.public.hex(),
                "introducer": introducer.name,
                "introducer_id": introducer.id,
                "message_hex": message.hex(),
                "signature_hex": signature.hex(),
                "signature_base64": b64(signature),
                "op": op,
                "op_canonical_text": encode(op).decode("utf-8"),
            }
        )
    founder = device_add(A, None)
    return {
        "description": "introduction(lib, device, key) = 'p2psync/1 device introduction' 00 lib 00 device 00 key; "
        "signed by the introducer; carried in a device.add operation.",
        "founder_op": founder,
        "founder_op_canonical_text": encode(founder).decode("utf-8"),
        "introductions": cases,
    }


# --- (e) the scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    replicas: dict[str, Replica]
    sets: dict[str, ChangeSet]  # "A1" -> change set, in the order they were sealed
    order: list[str]
    checkpoints: list[dict[str, Any]]
    story: list[dict[str, Any]]


MANIFEST_1 = {
    "size": 300_000,
    "sha256": hashlib.sha256(b"p2psync vectors: paper.pdf version 1").hexdigest(),
    "chunks": [
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 1").hexdigest(), 130_000],
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 2").hexdigest(), 70_000],
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 3").hexdigest(), 100_000],
    ],
}
MANIFEST_2 = {"size": 310_000, "sha256": hashlib.sha256(b"p2psync vectors: paper.pdf version 2").hexdigest()}


def run_scenario() -> Scenario:
    a, b, c = Replica(A), Replica(B), Replica(C)
    replicas = {"A": a, "B": b, "C": c}
    sealed: list[ChangeSet] = []
    story: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []

    def note(text: str) -> None:
        story.append({"step": len(story) + 1, "what": text})

    def do_sync(x: Replica, y: Replica) -> None:
        before = {(cs.author, cs.first) for r in (x, y) for cs in r.held}
        sync(x, y)
        for r in (x, y):
            for cs in r.held:
                if r.device is not None and cs.author == r.device.id and (cs.author, cs.first) not in before:
                    sealed.append(cs)
                    before.add((cs.author, cs.first))
        _number_chains(sealed)

    # Round 1: A founds the library and introduces B and C; B and C receive the membership.
    a.log(T0, device_add(A, None))
    a.log(T0 + 10, device_add(B, A))
    a.log(T0 + 20, device_add(C, A))
    note("A founds the library (device.add of itself, no introducer) and introduces B and C.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, sync A-C: A seals A1 (seq 1-3); B and C receive it.")

    # Round 2: A adds references, a group with two members and an attachment.
    w = T0 + 60_000
    a.add_ref(
        w,
        RA,
        {
            "type": "journal_article",
            "title": "Neuronal plasticity",
            "authors": [{"family": "Müller", "given": "Jörg"}, {"family": "Smith", "given": "Ann"}],
            "year": "2021",
            "journal": "Journal of Neuroscience",
            "doi": "10.1523/jneurosci.0001-21.2021",
            "keywords": ["plasticity", "synapse"],
        },
    )
    a.add_ref(
        w + 1,
        RB,
        {
            "type": "book",
            "title": "Deep learning",
            "year": "2016",
            "publisher": "MIT Press",
            "authors": [{"family": "Goodfellow", "given": "Ian"}],
        },
    )
    a.add_ref(
        w + 2,
        RC,
        {
            "type": "report",
            "title": "World health statistics 2020",
            "authors": [{"literal": "World Health Organization"}],
            "year": "2020",
        },
    )
    a.add_ref(w + 3, RD, {"type": "generic", "title": "Old draft"})
    a.create_group(w + 4, G, "Reading list")
    a.add_members(w + 5, G, [RA, RB, RC, RD])
    a.attach(w + 6, RA, "paper.pdf", MANIFEST_1)
    note("A adds references RA, RB, RC, RD, creates group G 'Reading list' with all four, attaches paper.pdf to RA.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, sync A-C: A seals A2 (seq 4-10, prev = id(A1)); B and C receive it.")

    # Round 3: concurrent edits on all three machines (no sync in between).
    w = T0 + 120_000
    b.edit(w, RA, {"title": "Neuronal plasticity in vivo"})
    b.edit(w + 1, RB, {"year": "2017"})
    b.edit(w + 2, RC, {"notes": "Check against the 2021 edition."})
    b.remove_members(w + 3, G, [RB])
    b.add_members(w + 4, G, [RB])
    b.attach(w + 5, RA, "paper.pdf", MANIFEST_2)
    note(
        "B: RA.title = 'Neuronal plasticity in vivo'; RB.year = '2017'; RC.notes set; removes RB from G and adds it "
        "back; replaces RA's paper.pdf (seen A's version)."
    )
    c.edit(w, RA, {"title": "Neuronal Plasticity"})
    c.edit(w + 1, RB, {"edition": "2nd"})
    c.remove_members(w + 2, G, [RB])
    c.rename_group(w + 3, G, "To read")
    c.edit(w + 4, RD, {"trashed": True})
    note(
        "C (same moment): RA.title = 'Neuronal Plasticity' (same timestamp as B's); RB.edition = '2nd'; removes RB "
        "from G; renames G 'To read'; moves RD to the trash."
    )
    a.create_group(w, H, "Temp")
    a.add_members(w + 1, H, [RB])
    a.edit(w + 2, RC, {"trashed": True})
    a.delete_ref(w + 3, RC)
    note(
        "A: creates group H 'Temp' with RB; moves RC to the trash and empties the trash (ref.delete RC: only a mark; "
        "RC's membership of G stays)."
    )
    do_sync(a, b)
    do_sync(a, c)
    do_sync(a, b)
    note("sync A-B, A-C, A-B: A3, B1 and C1 reach everyone.")
    checkpoints.append({"name": "after concurrent edits", "after": [cs_name(cs) for cs in sealed]})
    _check_converged(replicas)
    checkpoints[-1]["state"] = a.world.export()

    # Round 4: B keeps RC (resolves the delete-vs-edit conflict) and deletes H; C empties its trash.
    w = T0 + 180_000
    assert merge.reference_view(b.world.refs[RC]).conflicts == [merge.DELETED]
    keep = {
        "op": ops.REF_PUT,
        "ref": RC,
        "fields": {merge.DELETED: None},
        "seen": {merge.DELETED: registers.dots(b.world.refs[RC][merge.DELETED])},
    }
    b.log(w, keep)
    b.delete_group(w + 1, H)
    note(
        "B resolves RC's delete-vs-edit conflict by keeping it (ref.put deleted = null over the delete): RC is back "
        "with its membership of G. B deletes group H."
    )
    c.delete_ref(w, RD)
    note("C empties its trash: ref.delete RD. RD's membership of G stays in the state, hidden while RD is deleted.")
    do_sync(a, b)
    do_sync(a, c)
    do_sync(a, b)
    note("sync A-B, A-C, A-B: B2 and C2 reach everyone.")

    # Round 5: A removes C from the library.
    a.revoke(T0 + 240_000, C)
    note("A revokes C: device.revoke with upto = the last sequence of C that A holds.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, A-C: A4 reaches everyone.")
    _check_converged(replicas)
    final = a.world
    assert not merge.reference_view(final.refs[RC]).deleted and (G, RC) in final.members
    assert merge.reference_view(final.refs[RD]).deleted and (G, RD) in final.members
    checkpoints.append({"name": "final", "after": [cs_name(cs) for cs in sealed], "state": final.export()})
    sets = {cs_name(cs): cs for cs in sealed}
    return Scenario(replicas, sets, list(sets), checkpoints, story)


def cs_name(cs: ChangeSet) -> str:
    """A1, A2, ... : the author's name and the change set's position in its chain."""
    return f"{NAMES[cs.author]}{_position[cs.id]}"


_position: dict[str, int] = {}


def _number_chains(sets: list[ChangeSet]) -> None:
    counts: dict[str, int] = {}
    for cs in sets:
        counts[cs.author] = counts.get(cs.author, 0) + 1
        _position[cs.id] = counts[cs.author]


def _check_converged(replicas: dict[str, Replica]) -> None:
    states = [json.dumps(r.world.export(), sort_keys=True) for r in replicas.values()]
    if len(set(states)) != 1:
        raise SystemExit("the scenario's replicas did not converge")


def changeset_record(cs: ChangeSet, detailed: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "author": NAMES[cs.author],
        "author_id": cs.author,
        "first": cs.first,
        "last": cs.last,
        "prev": cs.prev,
        "deps": cs.deps,
        "id": cs.id,
        "wire_text": cs.wire().decode("utf-8"),
    }
    if detailed:
        body = json.loads(cs.body_bytes)
        record.update(
            {
                "library": cs.library,
                "entries": [list(e) for e in cs.entries],
                "body": body,
                "body_text": cs.body_bytes.decode("utf-8"),
                "body_hex": cs.body_bytes.hex(),
                "signature_input_hex": signature_input(cs.library, cs.body_bytes).hex(),
                "signature_hex": cs.signature.hex(),
                "signature_base64": b64(cs.signature),
                "wire_hex": cs.wire().hex(),
            }
        )
    return record


def scenario_vectors(sc: Scenario) -> dict[str, Any]:
    early = ["A1", "B1", "C1", *[n for n in sc.order if n not in ("A1", "B1", "C1")]]
    replica = Replica(None)
    report = model_receive(replica, [sc.sets[n].wire() for n in early])
    assert report["applied"] == len(early) and report["waiting"] == 0, report
    if json.dumps(replica.world.export(), sort_keys=True) != json.dumps(sc.checkpoints[-1]["state"], sort_keys=True):
        raise SystemExit("another delivery order gave another state")
    return {
        "description": "Three devices: A founds the library and introduces B and C; concurrent edits; a "
        "resolution; a revocation. Deliver the change sets (wire_text encoded as UTF-8) to an empty library of "
        "library_id in one of the delivery orders (each is a single exchange); after the change sets listed in a "
        "checkpoint the library must hold exactly that checkpoint's state.",
        "library_id": LIB,
        "devices": {
            name: {"device_id": dev.id, "seed_hex": seed(name).hex()} for name, dev in (("A", A), ("B", B), ("C", C))
        },
        "story": sc.story,
        "changesets": {name: changeset_record(cs) for name, cs in sc.sets.items()},
        "delivery_orders": {"as sealed": sc.order, "B1 and C1 before A2 (they wait for it)": early},
        "checkpoints": sc.checkpoints,
    }


def single_changeset_vectors(sc: Scenario) -> dict[str, Any]:
    return {
        "description": "Change sets taken from the scenario, with every intermediate value: body -> canonical body "
        "bytes -> signature input -> Ed25519 signature -> id -> wire bytes. changesets.build(library, author, prev, "
        "deps, entries, sign) must give exactly these bytes.",
        "changesets": [changeset_record(sc.sets[name], detailed=True) | {"name": name} for name in ("A1", "C2")],
        "split": split_vectors(),
        "limits": {
            "MAX_BYTES": changesets.MAX_BYTES,
            "MAX_ENTRIES": changesets.MAX_ENTRIES,
            "TARGET_BYTES": changesets.TARGET_BYTES,
            "MAX_DEPS": changesets.MAX_DEPS,
            "MAX_TS": changesets.MAX_TS,
            "MAX_INT": ops.MAX_INT,
            "MAX_OP_BYTES": ops.MAX_OP_BYTES,
            "MAX_DOTS": ops.MAX_DOTS,
            "MAX_REFS_PER_OP": ops.MAX_REFS_PER_OP,
        },
    }


def split_vectors() -> list[dict[str, Any]]:
    """changesets.split with the protocol's limits. Every entry is a ref.put whose only field is a 'notes'
    text of `length` copies of `char`; `entries` and `entry_costs` are run-length encoded: [[value, count], ...]."""

    def op_for(char: str, length: int) -> dict[str, Any]:
        return {"op": ops.REF_PUT, "ref": RA, "fields": {"notes": char * length}, "seen": {}}

    def runs(values: list[int]) -> list[list[int]]:
        out: list[list[int]] = []
        for v in values:
            if out and out[-1][0] == v:
                out[-1][1] += 1
            else:
                out.append([v, 1])
        return out

    exact = changesets.TARGET_BYTES // 2 - 32 - len(encode(op_for("n", 0)))
    largest = (ops.MAX_OP_BYTES - len(encode(op_for("n", 0)))) // 4  # 4-byte characters, within MAX_OP_BYTES
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
            ops.check(entry[2])
        pieces = changesets.split(entries)
        for piece in pieces:
            changesets.build(LIB, A.id, None if piece[0][0] == 1 else "0" * 64, {}, piece, A.sign)
        if any(len(encode(e[2])) > ops.MAX_OP_BYTES for e in entries):
            raise SystemExit(f"split case {name!r}: an entry is larger than a writer may log")
        out.append(
            {
                "name": name,
                "op_template": {
                    "op": ops.REF_PUT,
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


# --- (f) rejections -------------------------------------------------------------------------------


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
        "entries": [[11, TS, {"op": ops.REF_PUT, "ref": RE, "fields": {"title": "A new one"}, "seen": {}}]],
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
    ref_put = {"op": ops.REF_PUT, "ref": RE, "fields": {"title": "From a newcomer"}, "seen": {}}

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
        return {"op": ops.REF_PUT, "ref": RE, "fields": {"title": "Replaced"}, "seen": {"title": list(dots)}}

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
        "entries": [[c2.last + 1, TS, {"op": ops.REF_PUT, "ref": RA, "fields": {"volume": "12"}, "seen": {}}]],
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
    long_ts["entries"][0][1] = changesets.MAX_TS + 1
    float_seq = tweak(a1_body)
    float_seq["entries"][0][0] = 1.0
    marker = "Placeholder for a lone surrogate"
    lone_surrogate = signed_wire(
        with_op(next_a, {"op": ops.REF_PUT, "ref": RE, "fields": {"title": marker}, "seen": {}}), A
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
        ("larger than MAX_BYTES", "empty", [[" ", changesets.MAX_BYTES + 1]], "oversized"),
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
            signed_wire(tweak(a2_body, seq=[4, changesets.MAX_TS + 1]), A),
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
                with_op(next_a, {"op": ops.REF_PUT, "ref": RE, "fields": {"title": "  Two  spaces "}, "seen": {}}), A
            ),
            "schema",
        ),
        (
            "unknown field",
            "empty",
            signed_wire(with_op(next_a, {"op": ops.REF_PUT, "ref": RE, "fields": {"colour": "red"}, "seen": {}}), A),
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
                                "op": ops.ATTACHMENT_PUT,
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
                    {"op": ops.GROUP_DELETE, "group": G, "seen": {"name": [[A.id, 8]]}, "members": {RA: [[C.id, 1]]}},
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
        got = _expected_result(raw, replica)
        if got != expected:
            raise SystemExit(f"rejection case {name!r}: expected {expected}, the engine says {got}")
        record: dict[str, Any] = {"name": name, "receiver": ctx_name}
        if isinstance(wire, list):
            record["wire_runs"] = wire
        else:
            record.update(wire_field(raw))
        if expected in (Outcome.NEW, Outcome.DUPLICATE, Outcome.WAITING):
            record["expected"] = {"outcome": expected}
        else:
            record["expected"] = {"reason": expected, "stage": _stage(raw, replica)}
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


def runs_bytes(runs: list[list[Any]]) -> bytes:
    return "".join(text * count for text, count in runs).encode("utf-8")


def wire_field(raw: bytes) -> dict[str, str]:
    """The bytes as text when they are UTF-8 (exact: encode it again), else as hex."""
    try:
        return {"wire_text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"wire_hex": raw.hex()}


def _expected_result(raw: bytes, replica: Replica) -> str:
    try:
        cs = changesets.parse(raw, replica.library)
        return changesets.check(cs, replica.receiver(), verify)
    except ChangeSetRejected as exc:
        return exc.reason


def _stage(raw: bytes, replica: Replica) -> str:
    try:
        changesets.parse(raw, replica.library)
    except ChangeSetRejected:
        return "parse"
    return "check"


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
        "entries": [[11, TS, {"op": ops.DEVICE_REVOKE, "device": D.id, "upto": 0}]],
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
            [11, TS, {"op": ops.REF_DELETE, "ref": RX, "seen": {}}],
            [12, TS + 1, {"op": ops.REF_PUT, "ref": RX, "fields": {"title": "Written after its delete"}, "seen": {}}],
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


# --- operations and registers -----------------------------------------------------------------------


def op_vectors() -> dict[str, Any]:
    dot = [A.id, 4]
    rp = {"op": ops.REF_PUT, "ref": RA, "seen": {}}
    digest = hashlib.sha256(b"x").hexdigest()
    valid: list[tuple[str, dict[str, Any]]] = [
        (
            "ref.put: a new reference",
            rp
            | {
                "fields": {
                    "type": "journal_article",
                    "title": "Neuronal plasticity",
                    "short_title": "Plasticity",
                    "authors": [{"family": "Müller", "given": "Jörg"}, {"literal": "World Health Organization"}],
                    "editors": [{"family": "Curie"}],
                    "year": "2021a",
                    "date": "2021-02-30",
                    "accessed": "2024-01-31",
                    "doi": "10.1000/XYZ",
                    "abstract": "First line.\n\n  Indented second paragraph.",
                    "keywords": ["a b", "c"],
                    "custom8": "x",
                    "added": T0,
                }
            },
        ),
        ("ref.put: clear a field, having seen its value", rp | {"fields": {"title": None}, "seen": {"title": [dot]}}),
        ("ref.put: trash", rp | {"fields": {"trashed": True}}),
        ("ref.put: restore from the trash", rp | {"fields": {"trashed": None}, "seen": {"trashed": [dot]}}),
        (
            "ref.put: keep a deleted reference (resolution)",
            rp | {"fields": {"deleted": None}, "seen": {"deleted": [dot]}},
        ),
        ("ref.put: years", rp | {"fields": {"year": "in press"}}),
        ("ref.put: year case kept", rp | {"fields": {"year": "N.D."}}),
        ("ref.put: date year-month", rp | {"fields": {"date": "2021-02"}}),
        ("ref.put: long text keeps inner white space and a lone CR", rp | {"fields": {"notes": "a\r b\n\n\tc"}}),
        (
            "ref.put: the largest integers, 2^53, in added and in a dot",
            rp | {"fields": {"title": "T", "added": ops.MAX_INT}, "seen": {"title": [[B.id, ops.MAX_INT]]}},
        ),
        (
            "ref.delete (only a mark: no members or attachments)",
            {"op": ops.REF_DELETE, "ref": RA, "seen": {"title": [dot], "deleted": [[B.id, 2]]}},
        ),
        ("ref.delete of an unknown reference", {"op": ops.REF_DELETE, "ref": RA, "seen": {}}),
        ("group.put", {"op": ops.GROUP_PUT, "group": G, "fields": {"name": "Reading list"}, "seen": {"name": [dot]}}),
        ("group.delete", {"op": ops.GROUP_DELETE, "group": G, "seen": {"name": [dot]}, "members": {RA: [dot]}}),
        ("member.add", {"op": ops.MEMBER_ADD, "group": G, "refs": [RA, RB]}),
        ("member.remove", {"op": ops.MEMBER_REMOVE, "group": G, "seen": {RA: [dot]}}),
        ("member.remove of nothing", {"op": ops.MEMBER_REMOVE, "group": G, "seen": {}}),
        (
            "attachment.put with chunks",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "paper.pdf", "value": MANIFEST_1, "seen": []},
        ),
        (
            "attachment.put of an empty file",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "empty.txt",
                "value": {"size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "chunks": []},
                "seen": [],
            },
        ),
        (
            "attachment.put removing",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "Ünïcode name.pdf", "value": None, "seen": [dot]},
        ),
        (
            "attachment.put whose name holds .p2psync, not at its start",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "notes.p2psync-versions", "value": None, "seen": []},
        ),
        ("device.add: founder", device_add(A, None)),
        ("device.add: introduced", device_add(B, A)),
        ("device.revoke", {"op": ops.DEVICE_REVOKE, "device": C.id, "upto": 0}),
        ("device.revoke with upto 2^53", {"op": ops.DEVICE_REVOKE, "device": C.id, "upto": ops.MAX_INT}),
    ]
    invalid: list[tuple[str, Any]] = [
        ("not an object", ["ref.put"]),
        ("unknown kind", {"op": "ref.move", "ref": RA}),
        ("a missing key", {"op": ops.REF_PUT, "ref": RA, "fields": {"title": "T"}}),
        ("an extra key", rp | {"fields": {"title": "T"}, "ts": 1}),
        ("id with upper case", rp | {"ref": RA.upper(), "fields": {"title": "T"}}),
        ("id of 15 characters", rp | {"ref": RA[:15], "fields": {"title": "T"}}),
        ("id with 0, 1, 8 or 9", rp | {"ref": "refaaaaaaaaaaaa1", "fields": {"title": "T"}}),
        ("id with a trailing newline", rp | {"ref": RA + "\n", "fields": {"title": "T"}}),
        ("ref.put without fields", rp | {"fields": {}}),
        ("unknown field", rp | {"fields": {"colour": "red"}}),
        ("text with leading space", rp | {"fields": {"title": " T"}}),
        ("text with two spaces", rp | {"fields": {"title": "a  b"}}),
        ("text with a tab", rp | {"fields": {"title": "a\tb"}}),
        ("text with a no-break space", rp | {"fields": {"title": "a\u00a0b"}}),
        ("empty text (the normal form is null)", rp | {"fields": {"title": ""}}),
        ("text of 4001 characters", rp | {"fields": {"title": "x" * 4001}}),
        ("integer for a text field", rp | {"fields": {"volume": 12}}),
        ("long text with CR LF", rp | {"fields": {"abstract": "a\r\nb"}}),
        ("long text with a trailing newline", rp | {"fields": {"abstract": "a\n"}}),
        ("people as a string", rp | {"fields": {"authors": "Curie, Marie"}}),
        ("person as a string", rp | {"fields": {"authors": ["Curie, Marie"]}}),
        ("empty people list (the normal form is null)", rp | {"fields": {"authors": []}}),
        ("person with an empty given name", rp | {"fields": {"authors": [{"family": "Curie", "given": ""}]}}),
        ("person without a family name", rp | {"fields": {"authors": [{"given": "Marie"}]}}),
        ("person with both literal and family", rp | {"fields": {"authors": [{"literal": "X", "family": "Y"}]}}),
        ("keywords with a duplicate", rp | {"fields": {"keywords": ["a", "a"]}}),
        ("keywords with an empty item", rp | {"fields": {"keywords": ["a", ""]}}),
        ("year of five digits", rp | {"fields": {"year": "12345"}}),
        ("year with two letters", rp | {"fields": {"year": "2021ab"}}),
        ("year in Arabic-Indic digits", rp | {"fields": {"year": "\u0662\u0660\u0662\u0661"}}),
        ("year with a Kelvin sign (U+212A) for a letter", rp | {"fields": {"year": "2021\u212a"}}),
        ("date with month 13", rp | {"fields": {"date": "2021-13"}}),
        ("date with one-digit month", rp | {"fields": {"date": "2021-1"}}),
        ("date in full-width digits", rp | {"fields": {"date": "\uff12\uff10\uff12\uff11"}}),
        ("type not in normal form", rp | {"fields": {"type": "Journal Article"}}),
        ("type cleared", rp | {"fields": {"type": None}}),
        ("DOI with its URL prefix", rp | {"fields": {"doi": "https://doi.org/10.1000/xyz"}}),
        ("DOI not starting 10.", rp | {"fields": {"doi": "11.1000/xyz"}}),
        ("added negative", rp | {"fields": {"added": -1}}),
        ("added as text", rp | {"fields": {"added": "1"}}),
        ("added as a boolean", rp | {"fields": {"added": True}}),
        ("added written with a fraction (1.0)", rp | {"fields": {"added": 1.0}}),
        ("added above 2^53", rp | {"fields": {"added": ops.MAX_INT + 1}}),
        ("trashed false", rp | {"fields": {"trashed": False}}),
        ("trashed 1", rp | {"fields": {"trashed": 1}}),
        ("deleted set by ref.put", rp | {"fields": {"deleted": []}}),
        ("seen names a field the op does not write", rp | {"fields": {"title": "T"}, "seen": {"year": [dot]}}),
        ("dot with sequence 0", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, 0]]}}),
        ("dot with an empty device", rp | {"fields": {"title": "T"}, "seen": {"title": [["", 1]]}}),
        ("dot with a device that is not a device id", rp | {"fields": {"title": "T"}, "seen": {"title": [["x", 1]]}}),
        ("dot with a lower-case device id", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id.lower(), 1]]}}),
        (
            "dot with a device id and a trailing newline",
            rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id + "\n", 1]]}},
        ),
        ("dot with sequence above 2^53", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, ops.MAX_INT + 1]]}}),
        ("dot with sequence written 1.0", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, 1.0]]}}),
        ("dot as an object", rp | {"fields": {"title": "T"}, "seen": {"title": [{"device": A.id, "seq": 1}]}}),
        ("ref.delete seen naming an unknown field", {"op": ops.REF_DELETE, "ref": RA, "seen": {"colour": [dot]}}),
        (
            "ref.delete with members and attachments (an earlier draft)",
            {"op": ops.REF_DELETE, "ref": RA, "seen": {}, "members": {G: [dot]}, "attachments": {}},
        ),
        (
            "group.put with another field",
            {"op": ops.GROUP_PUT, "group": G, "fields": {"name": "X", "colour": "red"}, "seen": {}},
        ),
        (
            "group name not in normal form",
            {"op": ops.GROUP_PUT, "group": G, "fields": {"name": "To  read"}, "seen": {}},
        ),
        ("group name of 201 characters", {"op": ops.GROUP_PUT, "group": G, "fields": {"name": "x" * 201}, "seen": {}}),
        ("group name null", {"op": ops.GROUP_PUT, "group": G, "fields": {"name": None}, "seen": {}}),
        ("member.add of nothing", {"op": ops.MEMBER_ADD, "group": G, "refs": []}),
        ("member.add naming a reference twice", {"op": ops.MEMBER_ADD, "group": G, "refs": [RA, RA]}),
        (
            "attachment name with a slash",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "a/b.pdf", "value": None, "seen": []},
        ),
        ("attachment name '..'", {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "..", "value": None, "seen": []}),
        (
            "attachment name ending with a dot",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "paper.", "value": None, "seen": []},
        ),
        (
            "attachment name of 256 UTF-8 bytes",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "é" * 128, "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix .p2psync",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": ".p2psync-versions", "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix in another case",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": ".P2PSync-partial-x.pdf", "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix after case folding (U+017F LONG S)",
            {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": ".p2p\u017fync", "value": None, "seen": []},
        ),
        (
            "manifest in upper-case hex",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest.upper()},
            },
        ),
        (
            "manifest sha256 with a trailing newline",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest + "\n"},
            },
        ),
        (
            "manifest with an unknown key",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest, "mtime": 1},
            },
        ),
        (
            "manifest larger than 1 TiB",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 2**40 + 1, "sha256": digest},
            },
        ),
        (
            "chunks not adding up to the size",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 2, "sha256": digest, "chunks": [[digest, 1]]},
            },
        ),
        (
            "chunk of size 0",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 0, "sha256": digest, "chunks": [[digest, 0]]},
            },
        ),
        (
            "chunk longer than MAX_SIZE",
            {
                "op": ops.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 131_073, "sha256": digest, "chunks": [[digest, 131_073]]},
            },
        ),
        ("attachment seen as a map", {"op": ops.ATTACHMENT_PUT, "ref": RA, "name": "x", "value": None, "seen": {}}),
        ("device.add with a 31-byte key", device_add(B, A) | {"key": b64(B.public[:31])}),
        ("device.add key in non-canonical base64", device_add(B, A) | {"key": non_canonical_b64(b64(B.public))}),
        (
            "device.add signature in non-canonical base64",
            device_add(B, A) | {"signature": non_canonical_b64(str(device_add(B, A)["signature"]))},
        ),
        ("device.add introducer in lower case", device_add(B, A) | {"introducer": A.id.lower()}),
        ("device.add whose id does not match its key", device_add(B, A) | {"device": C.id}),
        ("device.add founder with a signature", device_add(A, None) | {"signature": b64(bytes(64))}),
        ("device.add introduced without a signature", device_add(B, A) | {"signature": None}),
        ("device.add with an empty name", device_add(B, A) | {"name": ""}),
        ("device.add with a name of 101 characters", device_add(B, A) | {"name": "x" * 101}),
        ("device.revoke of a 31-character id", {"op": ops.DEVICE_REVOKE, "device": C.id[:31], "upto": 0}),
        ("device.revoke with negative upto", {"op": ops.DEVICE_REVOKE, "device": C.id, "upto": -1}),
        ("device.revoke with upto true", {"op": ops.DEVICE_REVOKE, "device": C.id, "upto": True}),
        ("device.revoke with upto above 2^53", {"op": ops.DEVICE_REVOKE, "device": C.id, "upto": ops.MAX_INT + 1}),
        (
            "device.revoke of a device id with a trailing newline",
            {"op": ops.DEVICE_REVOKE, "device": C.id + "\n", "upto": 0},
        ),
    ]
    for _name, op in valid:
        ops.check(copy.deepcopy(op))
    for name, op in invalid:
        try:
            ops.check(copy.deepcopy(op))
        except InvalidInput:
            continue
        raise SystemExit(f"ops.check accepted the invalid op {name!r}")
    return {
        "description": "ops.check(op) accepts every op in 'valid' unchanged and raises InvalidInput for every op "
        "in 'invalid'; inside a change set an invalid op is the rejection reason 'schema'.",
        "valid": [{"name": n, "op": o} for n, o in valid],
        "invalid": [{"name": n, "op": o} for n, o in invalid],
    }


def register_vectors() -> dict[str, Any]:
    a, b, c = A.id, B.id, C.id
    resolve_cases: list[tuple[str, list[registers.Entry]]] = [
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
            {"name": n, "entries": e, "value": (r := registers.resolve(e)).value, "conflict": r.conflict}
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
                "result": registers.write(copy.deepcopy(e), (d[0], d[1]), t, v, s),
            }
            for n, e, d, t, v, s in write_cases
        ],
        "remove": [{"name": n, "entries": e, "seen": s, "result": registers.remove(e, s)} for n, e, s in remove_cases],
        "covered_dots": [{"name": n, "seen": s, "result": merge.covered_dots(s)} for n, s in covered_cases],
        "reference_view": [
            {
                "name": n,
                "state": s,
                "data": (v := merge.reference_view(s)).data,
                "conflicts": v.conflicts,
                "deleted": v.deleted,
            }
            for n, s in view_cases
        ],
    }


# --- attachments: content-defined chunking and the /chunks endpoint (attachments.md) ----------

_U64 = (1 << 64) - 1
# attachments.md §2.2: the masks of FastCDC 2020 for an average of 2^15 bytes, NC level 1.
SPEC_MASK_S = 0x0000D90303537000  # 16 bits set, used before the centre
SPEC_MASK_L = 0x0000D90313530000  # 14 bits set, used from the centre on
SPEC_MIN, SPEC_AVG, SPEC_MAX = 8192, 32768, 131072


def spec_gear() -> list[int]:
    """GEAR[b] = the first 8 bytes, big-endian, of MD5 of 64 bytes each equal to b (attachments.md §2.2)."""
    return [int.from_bytes(hashlib.md5(bytes([b]) * 64).digest()[:8], "big") for b in range(256)]


def spec_cut(data: bytes, start: int, gear: list[int]) -> int:
    """The length of the chunk that starts at `start`, one byte at a time as attachments.md §2.3 says."""
    n = len(data) - start
    if n <= SPEC_MIN:
        return n
    center = SPEC_AVG
    if n > SPEC_MAX:
        n = SPEC_MAX
    elif n < center:
        center = n
    middle, end = center - center % 2, n - n % 2
    h = 0
    for i in range(SPEC_MIN, end):
        h = ((h << 1) + gear[data[start + i]]) & _U64
        if h & (SPEC_MASK_S if i < middle else SPEC_MASK_L) == 0:
            return i  # the byte at i starts the next chunk
    return n


def spec_chunks(data: bytes) -> list[list[Any]]:
    """The chunk list by the spec's recipe; stops if model/chunking.py cuts differently."""
    gear = spec_gear()
    out: list[list[Any]] = []
    at = 0
    while at < len(data):
        length = spec_cut(data, at, gear)
        out.append([hashlib.sha256(data[at : at + length]).hexdigest(), length])
        at += length
    if out != chunking.chunk_bytes(data):
        raise SystemExit("model/chunking.py cuts differently from attachments.md §2")
    return out


def sha256_stream(label: str, size: int) -> bytes:
    """stream(label, n): SHA-256(label || u32be(0)) || SHA-256(label || u32be(1)) || ..., first n bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(label.encode("ascii") + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


def build_input(pieces: list[dict[str, Any]]) -> bytes:
    """An input from its recipe: the pieces concatenated (chunking.json 'pieces')."""
    out = bytearray()
    for piece in pieces:
        if "zeros" in piece:
            out += bytes(piece["zeros"])
        elif "hex" in piece:
            out += bytes.fromhex(piece["hex"])
        elif "text" in piece:
            out += piece["text"].encode("utf-8") * piece.get("repeat", 1)
        else:
            out += sha256_stream(piece["stream"], piece["bytes"])
    return bytes(out)


_PDF_LINE = "BT /F1 11 Tf 72 700 Td (Synaptic plasticity in the adult cortex: a review) Tj ET\n"
_PDF_ERRATUM = "BT /F1 11 Tf 72 690 Td (Erratum: see page 3) Tj ET\n"


def _pdf_like(text_run: list[dict[str, Any]], appended: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A buffer shaped like a PDF: text, two streams of incompressible bytes, a repeated text run."""
    return [
        {"text": "%PDF-1.7\n"},
        {"hex": "25e2e3cfd30a"},
        {
            "text": "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [3 0 R] "
            "/Count 1 >>\nendobj\n4 0 obj\n<< /Length 262144 /Filter /FlateDecode >>\nstream\n"
        },
        {"stream": "p2psync/1 vectors: pdf fonts", "bytes": 262144},
        {"text": "\nendstream\nendobj\n5 0 obj\n<< /Length 150000 >>\nstream\n"},
        *text_run,
        {
            "text": "\nendstream\nendobj\n6 0 obj\n<< /Subtype /Image /Width 1200 /Height 800 /Length 400000 >>"
            "\nstream\n"
        },
        {"stream": "p2psync/1 vectors: pdf image", "bytes": 400000},
        {"text": "\nendstream\nendobj\nxref\n0 7\n"},
        {"text": "0000000000 65535 f \n", "repeat": 7},
        {"text": "trailer\n<< /Size 7 /Root 1 0 R >>\nstartxref\n812345\n%%EOF\n"},
        *appended,
    ]


_TAIL_TEXT = "p2psync/1: the byte that cuts starts the next chunk\n"


def chunking_inputs() -> list[tuple[str, str, list[dict[str, Any]], str | None]]:
    """(name, what it shows, pieces, the input it shares chunks with)."""

    def random_input(size: int) -> list[dict[str, Any]]:
        return [{"stream": f"p2psync/1 vectors: random {size}", "bytes": size}] if size else []

    run = [{"text": _PDF_LINE, "repeat": 1800}]
    edited = [{"text": _PDF_LINE, "repeat": 900}, {"text": _PDF_ERRATUM}, {"text": _PDF_LINE, "repeat": 900}]
    return [
        ("empty", "an empty file has no chunks", random_input(0), None),
        ("random 1", "one byte: one chunk", random_input(1), None),
        ("random 8191", "shorter than MIN_SIZE: one chunk", random_input(8191), None),
        ("random 8192", "exactly MIN_SIZE: one chunk, nothing is hashed", random_input(8192), None),
        ("random 100000", "random bytes: cuts where the content says", random_input(100_000), None),
        ("random 1000000", "1 MB of random bytes", random_input(1_000_000), None),
        (
            "zeros 300000",
            "the gear hash of a constant run never matches: MAX_SIZE cuts, and one chunk twice in the list",
            [{"zeros": 300_000}],
            None,
        ),
        (
            "earliest cut",
            "the hash first matches at byte MIN_SIZE + 1, which starts the second chunk",
            [{"zeros": 8192}, {"hex": "37d3"}, {"text": _TAIL_TEXT}],
            None,
        ),
        (
            "cut at the last byte",
            "an even rest: its last byte is examined and cuts, leaving a chunk of one byte",
            [{"zeros": 8292}, {"hex": "9ffe"}],
            None,
        ),
        (
            "last byte not examined",
            "an odd rest: its last byte is never examined (bytes are hashed in pairs), one chunk",
            [{"zeros": 8291}, {"hex": "9ffe"}],
            None,
        ),
        ("pdf-like", "a buffer shaped like a PDF (about 800 KB)", _pdf_like(run, []), None),
        (
            "pdf-like, 100 KB appended",
            "only the last chunk of pdf-like changes; new chunks follow",
            _pdf_like(run, [{"stream": "p2psync/1 vectors: appended update", "bytes": 100_000}]),
            "pdf-like",
        ),
        (
            "pdf-like, a line inserted",
            "an edit in the middle changes the chunks around it only",
            _pdf_like(edited, []),
            "pdf-like",
        ),
    ]


# The chunk lengths the crafted inputs exist to show (checked while generating).
_CRAFTED = {
    "zeros 300000": [131072, 131072, 37856],
    "earliest cut": [8193, 1 + len(_TAIL_TEXT)],
    "cut at the last byte": [8293, 1],
    "last byte not examined": [8293],
}


def _chunks_frame(datas: list[bytes | None]) -> bytes:
    """attachments.md §4.2: for each requested name, u32be(length) || bytes; length 0: not here."""
    return b"".join(struct.pack(">I", len(d)) + d if d else b"\x00\x00\x00\x00" for d in datas)


def chunking_vectors() -> dict[str, Any]:
    from pyfastcdc.py.constants import GEAR  # the table the reference's chunker uses

    gear = spec_gear()
    if gear != list(GEAR):
        raise SystemExit("pyfastcdc's gear table is not the one attachments.md §2.2 derives")
    if (chunking.MIN_SIZE, chunking.AVG_SIZE, chunking.MAX_SIZE) != (SPEC_MIN, SPEC_AVG, SPEC_MAX) or (
        chunking.NORMALIZATION,
        chunking.SEED,
    ) != (1, 0):
        raise SystemExit("model/chunking.py's parameters differ from attachments.md §2.1")
    # A manifest of MAX_CHUNKS chunks of MAX_SIZE fits in one operation (attachments.md §1.2).
    biggest = {
        "op": ops.ATTACHMENT_PUT,
        "ref": RA,
        "name": "x" * 255,
        "value": {
            "size": chunking.MAX_CHUNKS * SPEC_MAX,
            "sha256": "0" * 64,
            "chunks": [["0" * 64, SPEC_MAX]] * chunking.MAX_CHUNKS,
        },
        "seen": [],
    }
    if len(canonical.encode(biggest)) > ops.MAX_OP_BYTES:
        raise SystemExit("a manifest of MAX_CHUNKS chunks does not fit in one operation")

    inputs: list[dict[str, Any]] = []
    chunk_bytes_of: dict[str, bytes] = {}
    for name, note, pieces, base in chunking_inputs():
        data = build_input(pieces)
        chunks = spec_chunks(data)
        if name in _CRAFTED and [c[1] for c in chunks] != _CRAFTED[name]:
            raise SystemExit(f"the crafted input {name!r} no longer cuts as it should")
        at = 0
        for digest, length in chunks:
            chunk_bytes_of[digest] = data[at : at + length]
            at += length
        manifest = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": chunks}
        if attachments.validate_manifest(copy.deepcopy(manifest)) != manifest:
            raise SystemExit(f"the manifest of {name!r} does not validate")
        case: dict[str, Any] = {"name": name, "note": note, "pieces": pieces, "manifest": manifest}
        if base is not None:
            known = {digest for digest, _ in inputs[[i["name"] for i in inputs].index(base)]["manifest"]["chunks"]}
            shared = [c for c in chunks if c[0] in known]
            case["shared_with"] = {
                "input": base,
                "chunks": len(shared),
                "bytes": sum(c[1] for c in shared),
                "new_chunks": len(chunks) - len(shared),
                "new_bytes": len(data) - sum(c[1] for c in shared),
            }
        inputs.append(case)

    # The /chunks endpoint: a server that holds two small chunks and not a third.
    one = next(i for i in inputs if i["name"] == "random 1")["manifest"]["chunks"][0][0]
    earliest = next(i for i in inputs if i["name"] == "earliest cut")["manifest"]["chunks"]
    held = {one: chunk_bytes_of[one], earliest[1][0]: chunk_bytes_of[earliest[1][0]]}
    lacking = earliest[0][0]
    absent = hashlib.sha256(b"p2psync/1 vectors: a chunk nobody has").hexdigest()

    def answer(names: list[str]) -> bytes:
        return _chunks_frame([held.get(n) for n in names])

    def request(name: str, names: list[str]) -> dict[str, Any]:
        body = {"chunks": names}
        response = answer(names)
        return {
            "name": name,
            "body_text": encode(body).decode("ascii"),
            "status": 200,
            "response_hex": response.hex(),
        }

    ok = [
        request("two held, one missing between them", [one, lacking, earliest[1][0]]),
        request("a name asked twice is answered twice", [earliest[1][0], earliest[1][0]]),
    ]
    most = net_chunks.MAX_CHUNKS_PER_REQUEST
    ok.append(
        {
            "name": f"{most} names, the most a request may hold, none held",
            "body_runs": [['{"chunks":[', 1], [f'"{absent}",', most - 1], [f'"{absent}"]}}', 1]],
            "status": 200,
            "response_hex_runs": [["00000000", most]],
        }
    )
    if "".join(t * c for t, c in ok[-1]["body_runs"]).encode() != encode({"chunks": [absent] * most}):
        raise SystemExit("body_runs do not spell the request")
    bad_texts = [
        ("not an object", "[]"),
        ("no chunks member", "{}"),
        ("chunks not a list", f'{{"chunks":"{one}"}}'),
        ("an empty list", '{"chunks":[]}'),
        ("a name in upper-case hex", f'{{"chunks":["{one.upper()}"]}}'),
        ("a name of 63 hex digits", f'{{"chunks":["{one[:63]}"]}}'),
        ("a name of 65 hex digits", f'{{"chunks":["{one}0"]}}'),
        ("a name that is not a string", '{"chunks":[1]}'),
        ("a null name", '{"chunks":[null]}'),
    ]
    bad: list[dict[str, Any]] = [{"name": n, "body_text": t, "status": 400, "error": "malformed"} for n, t in bad_texts]
    bad.append(
        {
            "name": f"{most + 1} names, one too many",
            "body_runs": [['{"chunks":[', 1], [f'"{absent}",', most], [f'"{absent}"]}}', 1]],
            "status": 400,
            "error": "malformed",
        }
    )
    return {
        "description": "Attachment chunking (attachments.md §2) and the /chunks endpoint (§4). Each input is "
        "built from its pieces, concatenated: {'zeros': n} n zero bytes; {'hex': h} those bytes; {'text': t, "
        "'repeat': k} t as UTF-8, k times (1 if absent); {'stream': label, 'bytes': n} the first n bytes of "
        "SHA-256(label || u32be(0)) || SHA-256(label || u32be(1)) || ..., label as ASCII. Cut it with the "
        "parameters below: the manifest is {size, sha256, chunks}, chunks [[sha256 hex, length], ...] in order. "
        "shared_with counts the chunks whose names also occur in another input's manifest. Requests: the server "
        "holds exactly the bytes of server_chunks (name -> hex); body_runs, like wire_runs, is [[text, count], "
        "...], each text repeated, concatenated, as UTF-8; response_hex_runs the same for hex.",
        "parameters": {
            "min_size": SPEC_MIN,
            "avg_size": SPEC_AVG,
            "max_size": SPEC_MAX,
            "normalization_level": 1,
            "mask_s_hex": f"{SPEC_MASK_S:016x}",
            "mask_l_hex": f"{SPEC_MASK_L:016x}",
            "gear_recipe": "GEAR[b] = the first 8 bytes, as a big-endian integer, of MD5 of 64 bytes each of value b",
            "gear_hex": [f"{g:016x}" for g in gear],
            "max_chunks": chunking.MAX_CHUNKS,
            "max_chunks_per_request": most,
        },
        "inputs": inputs,
        "server_chunks": {n: d.hex() for n, d in sorted(held.items())},
        "requests": ok + bad,
    }


# --- writing ---------------------------------------------------------------------------------------


def dump(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def build_all() -> dict[str, bytes]:
    _position.clear()
    scenario = run_scenario()
    files: dict[str, Callable[[], Any]] = {
        "canonical.json": canonical_vectors,
        "identity.json": identity_vectors,
        "introduction.json": introduction_vectors,
        "changeset.json": lambda: single_changeset_vectors(scenario),
        "scenario.json": lambda: scenario_vectors(scenario),
        "rejections.json": lambda: rejection_vectors(scenario),
        "ops.json": op_vectors,
        "registers.json": register_vectors,
        "chunking.json": chunking_vectors,
        "relay_kdf.json": relay_vectors.kdf_vectors,  # protocol/relay_vectors.py: written apart from p2psync
        "relay_keys.json": relay_key_vectors.key_vectors,
    }
    return {name: dump(make()) for name, make in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "vectors")
    args = parser.parse_args(argv)
    outputs = build_all()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        (args.out / name).write_bytes(data)
    total = sum(len(d) for d in outputs.values())
    print(f"wrote {len(outputs)} vector files ({total:,} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
