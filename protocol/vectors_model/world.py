"""The replicated state a log determines (protocol/changesets.md, merge.md), as registers: World
applies one log entry and exports the expected state in the vectors' form. No storage form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vectors_model import rules
from vectors_model.rules import State


@dataclass
class World:
    """Everything a library holds that the log determines (the protocol state, no storage form)."""

    refs: dict[str, State] = field(default_factory=dict)
    groups: dict[str, State] = field(default_factory=dict)
    members: dict[tuple[str, str], list[rules.Entry]] = field(default_factory=dict)
    attachments: dict[tuple[str, str], list[rules.Entry]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    revocations: dict[str, int] = field(default_factory=dict)
    device_names: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> {name, seq}
    group_sets: dict[str, State] = field(default_factory=dict)
    library_name: list[rules.Entry] = field(default_factory=list)  # one register

    def _remove_member(self, group: str, ref: str, seen: list[Any]) -> None:
        left = rules.remove(self.members.get((group, ref), []), seen)
        if left:
            self.members[(group, ref)] = left
        else:
            self.members.pop((group, ref), None)

    def apply(self, device: str, seq: int, ts: int, op: dict[str, Any]) -> None:
        """One log entry; the same decisions as store/apply.py, in terms of registers."""
        dot = (device, seq)
        kind = op["op"]
        if kind in (rules.REF_PUT, rules.GROUP_PUT, rules.GROUPSET_PUT):
            table, key = {
                rules.REF_PUT: (self.refs, "ref"),
                rules.GROUP_PUT: (self.groups, "group"),
                rules.GROUPSET_PUT: (self.group_sets, "set"),
            }[kind]
            state = table.setdefault(op[key], {})
            for name, value in op["fields"].items():
                state[name] = rules.write(state.get(name, []), dot, ts, value, op["seen"].get(name, []))
        elif kind == rules.REF_DELETE:
            ref = op["ref"]
            state = self.refs.setdefault(ref, {})
            # Only the mark: memberships and attachments stay (hidden while the reference is deleted).
            state[rules.DELETED] = rules.write(
                state.get(rules.DELETED, []), dot, ts, rules.covered_dots(op["seen"]), op["seen"].get(rules.DELETED, [])
            )
        elif kind in (rules.GROUP_DELETE, rules.GROUPSET_DELETE):
            table, key = (self.groups, "group") if kind == rules.GROUP_DELETE else (self.group_sets, "set")
            obj = op[key]
            state = table.get(obj, {})
            for name, seen in op["seen"].items():
                if name in state:
                    state[name] = rules.remove(state[name], seen)
            state = {name: entries for name, entries in state.items() if entries}
            if state:
                table[obj] = state
            else:
                table.pop(obj, None)
            # A group set's delete writes nothing to its groups: they show unfiled (merge.md §5.6).
            for ref, seen in op.get("members", {}).items():
                self._remove_member(obj, ref, seen)
        elif kind == rules.LIBRARY_NAME:
            self.library_name = rules.write(self.library_name, dot, ts, op["name"], op["seen"])
        elif kind == rules.MEMBER_ADD:
            for ref in op["refs"]:
                key = (op["group"], ref)
                self.members[key] = rules.write(self.members.get(key, []), dot, ts, True, [])
        elif kind == rules.MEMBER_REMOVE:
            for ref, seen in op["seen"].items():
                self._remove_member(op["group"], ref, seen)
        elif kind == rules.ATTACHMENT_PUT:
            key = (op["ref"], op["name"])
            self.attachments[key] = rules.write(self.attachments.get(key, []), dot, ts, op["value"], op["seen"])
        elif kind == rules.DEVICE_ADD:
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
        elif kind == rules.DEVICE_REVOKE:
            # Kept whether or not the device is known yet; several revocations keep the smallest cut-off.
            upto = self.revocations.get(op["device"])
            self.revocations[op["device"]] = op["upto"] if upto is None else min(upto, op["upto"])
        elif kind == rules.DEVICE_NAME:
            # The author names itself; its entry with the largest seq wins, known as a device or not.
            known = self.device_names.get(device)
            if known is None or seq > known["seq"]:
                self.device_names[device] = {"name": op["name"], "seq": seq}
        else:  # pragma: no cover
            raise ValueError(kind)

    def export(self) -> dict[str, Any]:
        """The expected state, in the form the vectors and tests/test_vectors.py use."""
        refs = {}
        for ref, state in sorted(self.refs.items()):
            view = rules.reference_view(state)
            refs[ref] = {
                "registers": {name: sorted(entries) for name, entries in sorted(state.items()) if entries},
                "data": view.data,
                "conflicts": view.conflicts,
                "deleted": view.deleted,
            }
        groups = {}
        for group, state in sorted(self.groups.items()):
            resolved = rules.resolve(state.get("name", []))
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
            resolved = rules.resolve(entries)
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
            "device_names": {d: dict(v) for d, v in sorted(self.device_names.items())},
        }
