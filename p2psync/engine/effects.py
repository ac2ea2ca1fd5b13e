"""What each operation does to the replicated state, as pure values: the apply dispatch.

effects(op, dot, ts) turns one checked operation into the writes it makes, in order. Each write
names the object it touches (a reference, a group, a membership, an attachment, a device) and
carries the change to make to that object's registers, as a pure function of what the object
holds now. store/apply.py is the other half: for each write it loads the object's registers,
calls write.change on them and stores the result as rows. So the rules of every operation live
here, and the store only knows tables.

    ref.put          RefWrite(PutFields)                        per field: registers.write
    ref.delete       RefWrite(MarkDeleted, tombstone)           merge.py: mark, do not erase
    group.put        GroupWrite(PutFields)
    group.delete     GroupWrite(ForgetSeen, tombstone), then MemberWrite(RemoveSeen) per member
    member.add       MemberWrite(AddPresent) per reference       add-wins set
    member.remove    MemberWrite(RemoveSeen) per reference
    attachment.put   AttachmentWrite(WriteValue)
    device.add       DeviceIntroduced                           the store keeps the smallest dot
    device.revoke    DeviceRevoked                              the store keeps the smallest upto
    device.name      DeviceNamed                                the store keeps the largest seq
    groupset.put     GroupSetWrite(PutFields)
    groupset.delete  GroupSetWrite(ForgetSeen, tombstone)        its groups stay, shown unfiled
    library.name     LibraryNamed(WriteValue)                   one register for the library
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psync.engine import merge, ops, registers

State = dict[str, list[registers.Entry]]  # register name -> entries
Dot = registers.Dot


# --- changes to one object's registers (pure: they return the new registers) ------------------


@dataclass(frozen=True)
class PutFields:
    """Write each field's register, replacing the entries the author had seen."""

    dot: Dot
    ts: int
    fields: dict[str, Any]
    seen: dict[str, list[Any]]

    def __call__(self, state: State) -> State:
        for name, value in self.fields.items():
            state[name] = registers.write(state.get(name, []), self.dot, self.ts, value, self.seen.get(name, []))
        return state


@dataclass(frozen=True)
class MarkDeleted:
    """A permanent delete writes the register "deleted" with every dot it had seen (merge.py):
    an edit it had not seen survives it."""

    dot: Dot
    ts: int
    seen: dict[str, list[Any]]

    def __call__(self, state: State) -> State:
        covered = merge.covered_dots(self.seen)
        deleted = state.get(merge.DELETED, [])
        state[merge.DELETED] = registers.write(deleted, self.dot, self.ts, covered, self.seen.get(merge.DELETED, []))
        return state


@dataclass(frozen=True)
class ForgetSeen:
    """Drop the seen entries of the registers named (a group's delete)."""

    seen: dict[str, list[Any]]

    def __call__(self, state: State) -> State:
        for name, seen in self.seen.items():
            if name in state:
                state[name] = registers.remove(state[name], seen)
        return state


@dataclass(frozen=True)
class AddPresent:
    """An add-wins set's add: a `true` entry with this dot."""

    dot: Dot
    ts: int

    def __call__(self, entries: list[registers.Entry]) -> list[registers.Entry]:
        return registers.write(entries, self.dot, self.ts, True, [])


@dataclass(frozen=True)
class RemoveSeen:
    """Drop the seen entries of one register (an add-wins remove)."""

    seen: list[Any]

    def __call__(self, entries: list[registers.Entry]) -> list[registers.Entry]:
        return registers.remove(entries, self.seen)


@dataclass(frozen=True)
class WriteValue:
    """Write one register (an attachment's manifest, or null)."""

    dot: Dot
    ts: int
    value: Any
    seen: list[Any]

    def __call__(self, entries: list[registers.Entry]) -> list[registers.Entry]:
        return registers.write(entries, self.dot, self.ts, self.value, self.seen)


# --- the writes an operation makes ------------------------------------------------------------


@dataclass(frozen=True)
class RefWrite:
    ref: str
    change: Callable[[State], State]
    tombstone: bool = False  # a permanent delete: the reference's id is remembered as deleted


@dataclass(frozen=True)
class GroupWrite:
    group: str
    change: Callable[[State], State]
    tombstone: bool = False


@dataclass(frozen=True)
class MemberWrite:
    group: str
    ref: str
    change: Callable[[list[registers.Entry]], list[registers.Entry]]


@dataclass(frozen=True)
class AttachmentWrite:
    ref: str
    name: str
    change: Callable[[list[registers.Entry]], list[registers.Entry]]


@dataclass(frozen=True)
class DeviceIntroduced:
    """A device joins. Introduced twice (say, paired again), the introduction with the smallest
    dot (author, seq) is kept, so every machine keeps the same one whatever the arrival order."""

    device: str
    key: str
    name: str
    introducer: str | None
    signature: str | None
    author: str  # the dot of the entry that introduced it
    seq: int


@dataclass(frozen=True)
class DeviceRevoked:
    """No change set of the device past `upto` is accepted; several revocations keep the smallest."""

    device: str
    upto: int


@dataclass(frozen=True)
class DeviceNamed:
    """The author names itself; of one device's names the one with the largest seq stands (its
    own entries are totally ordered), kept whether or not its introduction has arrived yet."""

    device: str
    name: str
    seq: int


@dataclass(frozen=True)
class GroupSetWrite:
    set: str
    change: Callable[[State], State]
    tombstone: bool = False


@dataclass(frozen=True)
class LibraryNamed:
    """The library's name register: the newest (ts, device, seq) of concurrent names is shown."""

    change: Callable[[list[registers.Entry]], list[registers.Entry]]


Effect = (
    RefWrite
    | GroupWrite
    | MemberWrite
    | AttachmentWrite
    | DeviceIntroduced
    | DeviceRevoked
    | DeviceNamed
    | GroupSetWrite
    | LibraryNamed
)


def effects(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    """The writes one checked operation with this dot and timestamp makes, in order."""
    return _BY_KIND[op["op"]](op, dot, ts)


def _ref_put(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [RefWrite(op["ref"], PutFields(dot, ts, op["fields"], op["seen"]))]


def _ref_delete(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [RefWrite(op["ref"], MarkDeleted(dot, ts, op["seen"]), tombstone=True)]


def _group_put(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [GroupWrite(op["group"], PutFields(dot, ts, op["fields"], op["seen"]))]


def _group_delete(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    group = op["group"]
    members: list[Effect] = [MemberWrite(group, ref, RemoveSeen(seen)) for ref, seen in op["members"].items()]
    return [GroupWrite(group, ForgetSeen(op["seen"]), tombstone=True), *members]


def _member_add(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [MemberWrite(op["group"], ref, AddPresent(dot, ts)) for ref in op["refs"]]


def _member_remove(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [MemberWrite(op["group"], ref, RemoveSeen(seen)) for ref, seen in op["seen"].items()]


def _attachment_put(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [AttachmentWrite(op["ref"], op["name"], WriteValue(dot, ts, op["value"], op["seen"]))]


def _device_add(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [DeviceIntroduced(op["device"], op["key"], op["name"], op["introducer"], op["signature"], *dot)]


def _device_revoke(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [DeviceRevoked(op["device"], op["upto"])]


def _device_name(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [DeviceNamed(dot[0], op["name"], dot[1])]


def _groupset_put(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [GroupSetWrite(op["set"], PutFields(dot, ts, op["fields"], op["seen"]))]


def _groupset_delete(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [GroupSetWrite(op["set"], ForgetSeen(op["seen"]), tombstone=True)]


def _library_name(op: ops.Op, dot: Dot, ts: int) -> list[Effect]:
    return [LibraryNamed(WriteValue(dot, ts, op["name"], op["seen"]))]


_BY_KIND: dict[str, Callable[[ops.Op, Dot, int], list[Effect]]] = {
    ops.REF_PUT: _ref_put,
    ops.REF_DELETE: _ref_delete,
    ops.GROUP_PUT: _group_put,
    ops.GROUP_DELETE: _group_delete,
    ops.MEMBER_ADD: _member_add,
    ops.MEMBER_REMOVE: _member_remove,
    ops.ATTACHMENT_PUT: _attachment_put,
    ops.DEVICE_ADD: _device_add,
    ops.DEVICE_REVOKE: _device_revoke,
    ops.DEVICE_NAME: _device_name,
    ops.GROUPSET_PUT: _groupset_put,
    ops.GROUPSET_DELETE: _groupset_delete,
    ops.LIBRARY_NAME: _library_name,
}
assert set(_BY_KIND) == set(ops.KINDS)
