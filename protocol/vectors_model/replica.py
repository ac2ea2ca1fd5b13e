"""Devices that edit, seal and exchange change sets (what store/sync.py does): Replica keeps one
library's log, change sets and World; model_receive is the delivery order of a receive.
"""

from __future__ import annotations

import base64
from typing import Any

from vectors_model import changesets, op_schema, rules
from vectors_model.canonical_text import encode
from vectors_model.changesets import ChangeSet, ChangeSetRejected, Outcome, Receiver
from vectors_model.spec import LIB, Device, library_id_for, signature_input, verify
from vectors_model.world import World


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
        assert op_schema.is_valid(op), op
        if len(encode(op)) > rules.MAX_OP_BYTES:  # store/library.Writer.log: every entry must fit a change set
            raise ValueError("operation too large to log")
        seq = len(self.own) + 1
        ts = max(wall, self.clock + 1)  # engine/clock.tick
        self.clock = ts
        self.own.append((seq, ts, op))
        self.world.apply(self.device.id, seq, ts, op)
        return seq, ts

    def add_ref(self, wall: int, ref: str, values: dict[str, Any]) -> None:
        ts = max(wall, self.clock + 1)
        self.log(wall, {"op": rules.REF_PUT, "ref": ref, "fields": {**values, "added": ts}, "seen": {}})

    def edit(self, wall: int, ref: str, changes: dict[str, Any]) -> None:
        op = rules.put_fields(rules.REF_PUT, "ref", ref, self.world.refs[ref], changes)
        assert op is not None
        self.log(wall, op)

    def delete_ref(self, wall: int, ref: str) -> None:
        self.log(wall, rules.delete_ref(ref, self.world.refs[ref]))

    def create_group(self, wall: int, group: str, name: str) -> None:
        self.log(wall, {"op": rules.GROUP_PUT, "group": group, "fields": {"name": name}, "seen": {}})

    def rename_group(self, wall: int, group: str, name: str) -> None:
        op = rules.put_fields(rules.GROUP_PUT, "group", group, self.world.groups[group], {"name": name})
        assert op is not None
        self.log(wall, op)

    def delete_group(self, wall: int, group: str) -> None:
        members = {r: rules.dots(e) for (g, r), e in sorted(self.world.members.items()) if g == group}
        self.log(wall, rules.delete_group(group, self.world.groups[group], members))

    def add_members(self, wall: int, group: str, refs: list[str]) -> None:
        self.log(wall, {"op": rules.MEMBER_ADD, "group": group, "refs": refs})

    def remove_members(self, wall: int, group: str, refs: list[str]) -> None:
        seen = {r: rules.dots(self.world.members[(group, r)]) for r in refs}
        self.log(wall, {"op": rules.MEMBER_REMOVE, "group": group, "seen": seen})

    def attach(self, wall: int, ref: str, name: str, manifest: dict[str, Any] | None) -> None:
        seen = rules.dots(self.world.attachments.get((ref, name), []))
        self.log(wall, {"op": rules.ATTACHMENT_PUT, "ref": ref, "name": name, "value": manifest, "seen": seen})

    def revoke(self, wall: int, device: Device) -> None:
        self.log(wall, {"op": rules.DEVICE_REVOKE, "device": device.id, "upto": self.vv.get(device.id, 0)})

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
