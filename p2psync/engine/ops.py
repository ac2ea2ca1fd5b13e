"""Operations: what one change-log entry says, and the pure rules for building and checking them.

Every mutation of a library is one or more operations. An operation is a JSON object; its entry in
the change log gives it a dot (device, seq) and a timestamp. The same operation, applied to the
same state, gives the same state on every machine (see store/apply.py, which is the only place
that writes the tables, for local edits and for replay alike).

    ref.put          {"ref", "fields": {name: value|null}, "seen": {name: [dot...]}}
    ref.delete       {"ref", "seen": {name: [dot...]}}      permanent delete: a mark (merge.py);
                                                             groups and attachments stay, hidden
    group.put        {"group", "fields": {field: value}, "seen": {field: [dot...]}}
                     fields: name (str), query (str: a smart group's search), set (a set id|null)
    group.delete     {"group", "seen": {field: [dot...]}, "members": {ref: [dot...]}}
    member.add       {"group", "refs": [ref...]}                      add-wins set
    member.remove    {"group", "seen": {ref: [dot...]}}
    attachment.put   {"ref", "name", "value": manifest|null, "seen": [dot...]}
    device.add       {"device", "key", "name", "introducer", "signature"}   library membership
    device.revoke    {"device", "upto"}     no change set of device past sequence upto is accepted
    device.name      {"name"}               the author's own name for people (its latest wins)
    groupset.put     {"set", "fields": {"name": str}, "seen": {"name": [dot...]}}   a folder of groups
    groupset.delete  {"set", "seen": {"name": [dot...]}}
    library.name     {"name", "seen": [dot...]}             the library's name, one register

A dot is [device, seq]. "seen" lists exactly the entries the author's write replaces.

device.add makes a device a member of the library: its Ed25519 public key (base64), a name for
people, and who introduced it. The founding device introduces itself (introducer null, no
signature). Any other device is introduced by a member, whose key signs the introduction
(crypto/identity.introduction_message), so the membership can be checked by every machine.

device.name renames its author, and only its author (the op names no device, so no device can
rename another): of a device's names, the one in its entry with the largest seq is shown, the
same on every machine whatever the arrival order, since one device's entries are totally ordered.

Smart groups and group sets (issue 23). A smart group is a group whose register `query` holds a
search (model/groups.py): group.put carries it beside the name, so a smart group is renamed,
deleted and merged by exactly the rules of a plain group (a rename concurrent with a delete
brings it back; a rename of a smart group writes its query again so it comes back smart). The
register `set` files a group in a group set (one register: at most one set, the newest write
shown). A group set is its own object (groupset.put/delete); a group whose set is deleted, or
never arrived, shows unfiled, so a set deleted while another device files a group in it
converges without a rule of its own. A group whose name register is empty (a move concurrent
with its delete) is not shown. library.name is one register for the whole library. Peers of an
older version refuse a change set that holds any of these (an unknown kind, or a group.put with
more than a name) as `schema`, whole, and apply it once they are updated (protocol/merge.md §8).

"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from p2psync.engine import registers
from p2psync.errors import InvalidValue
from p2psync.model import devices
from p2psync.model import fields as catalogue
from p2psync.model.attachments import validate_manifest, validate_name
from p2psync.model.devices import device_id_for, is_device_id, is_device_name
from p2psync.model.groups import validate_group_name, validate_library_name, validate_set_name, validate_smart_query
from p2psync.model.ids import is_id

try:  # the C proof of normal form (p2psync/_speedups.c); optional, for machines with a compiler
    from p2psync import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

Op = dict[str, Any]
State = dict[str, list[registers.Entry]]  # register name -> entries

REF_PUT, REF_DELETE = "ref.put", "ref.delete"
GROUP_PUT, GROUP_DELETE = "group.put", "group.delete"
MEMBER_ADD, MEMBER_REMOVE = "member.add", "member.remove"
ATTACHMENT_PUT = "attachment.put"
DEVICE_ADD, DEVICE_REVOKE, DEVICE_NAME = "device.add", "device.revoke", "device.name"
GROUPSET_PUT, GROUPSET_DELETE = "groupset.put", "groupset.delete"
LIBRARY_NAME = "library.name"
GROUP_FIELDS = frozenset({"name", "query", "set"})  # the registers of a group
KINDS = (
    REF_PUT,
    REF_DELETE,
    GROUP_PUT,
    GROUP_DELETE,
    MEMBER_ADD,
    MEMBER_REMOVE,
    ATTACHMENT_PUT,
    DEVICE_ADD,
    DEVICE_REVOKE,
    DEVICE_NAME,
    GROUPSET_PUT,
    GROUPSET_DELETE,
    LIBRARY_NAME,
)
MAX_DEVICE_NAME = devices.MAX_DEVICE_NAME
MAX_INT = 2**53  # every integer must survive any JSON implementation exactly
MAX_OP_BYTES = 3 * 1024 * 1024  # so that one operation always fits in a change set

MAX_DOTS = 10_000
MAX_REFS_PER_OP = 10_000

# The kind codes of p2psync/_speedups.c (enum kind), and the catalogue given to it once.
_C_KINDS = {
    catalogue.TEXT: 1,
    catalogue.LONG: 2,
    catalogue.PEOPLE: 3,
    catalogue.LIST: 4,
    catalogue.TYPE: 5,
    catalogue.YEAR: 6,
    catalogue.DATE: 8,
}
_C_DOI, _C_ADDED = 7, 9
if _speedups is not None:
    _speedups.configure(
        {**{f.name: _C_KINDS[f.kind] for f in catalogue.FIELDS.values()}, "doi": _C_DOI, "added": _C_ADDED},
        dict(catalogue.REFERENCE_TYPES),
        catalogue.MAX_TEXT,
        catalogue.MAX_LONG,
        catalogue.MAX_PEOPLE,
        catalogue.MAX_LIST_ITEMS,
        MAX_INT,  # also changesets.MAX_TS, the limit of sequence numbers and times
    )


# --- building operations: one builder per kind, so that no caller spells an operation out ------


Seen = dict[str, list[Any]]  # register name (or ref id) -> the dots [device, seq] a write replaces


def ref_put(ref_id: str, fields: dict[str, Any], seen: Seen | None = None) -> Op:
    return {"op": REF_PUT, "ref": ref_id, "fields": fields, "seen": {} if seen is None else seen}


def group_put(
    group_id: str, name: str, seen: Seen | None = None, query: str | None = None, group_set: str | None = None
) -> Op:
    """A new group (or a rename): a smart one when `query` is given, filed in `group_set` if given."""
    fields: dict[str, Any] = {"name": name}
    if query is not None:
        fields["query"] = query
    if group_set is not None:
        fields["set"] = group_set
    return {"op": GROUP_PUT, "group": group_id, "fields": fields, "seen": {} if seen is None else seen}


def groupset_put(set_id: str, name: str, seen: Seen | None = None) -> Op:
    return {"op": GROUPSET_PUT, "set": set_id, "fields": {"name": name}, "seen": {} if seen is None else seen}


def delete_groupset(set_id: str, state: State) -> Op:
    return {
        "op": GROUPSET_DELETE,
        "set": set_id,
        "seen": {name: registers.dots(entries) for name, entries in state.items() if entries},
    }


def library_rename(name: str, entries: list[registers.Entry]) -> Op:
    """The library's new name, replacing every name this device has seen."""
    return {"op": LIBRARY_NAME, "name": name, "seen": registers.dots(entries)}


def member_add(group_id: str, refs: list[str]) -> Op:
    return {"op": MEMBER_ADD, "group": group_id, "refs": refs}


def member_remove(group_id: str, seen: Seen) -> Op:
    return {"op": MEMBER_REMOVE, "group": group_id, "seen": seen}


def attachment_put(ref_id: str, name: str, value: dict[str, Any] | None, seen: list[Any] | None = None) -> Op:
    return {"op": ATTACHMENT_PUT, "ref": ref_id, "name": name, "value": value, "seen": [] if seen is None else seen}


def device_add(device: str, key: str, name: str, introducer: str | None, signature: str | None) -> Op:
    return {
        "op": DEVICE_ADD,
        "device": device,
        "key": key,
        "name": name,
        "introducer": introducer,
        "signature": signature,
    }


def device_revoke(device: str, upto: int) -> Op:
    return {"op": DEVICE_REVOKE, "device": device, "upto": upto}


def device_rename(name: str) -> Op:
    """The author's new name (model.devices.validate_device_name gives it its normal form)."""
    return {"op": DEVICE_NAME, "name": name}


# --- building operations from the current state (local edits) ----------------------------------


def put_fields(kind: str, key: str, obj_id: str, state: State, changes: dict[str, Any]) -> Op | None:
    """An op that sets `changes` on an object, or None if nothing would change.

    A field whose register already holds exactly that one value is left out, so an edit that
    changes nothing is not logged. A field in conflict is always written: the write has seen
    every version, so it resolves the conflict.
    """
    new_fields: dict[str, Any] = {}
    seen: dict[str, list[Any]] = {}
    for name, value in changes.items():
        entries = state.get(name, [])
        if not registers.changed(entries, value):
            continue
        new_fields[name] = value
        if entries:
            seen[name] = registers.dots(entries)
    if not new_fields:
        return None
    return {"op": kind, key: obj_id, "fields": new_fields, "seen": seen}


def delete_ref(ref_id: str, state: State) -> Op:
    return {
        "op": REF_DELETE,
        "ref": ref_id,
        "seen": {name: registers.dots(entries) for name, entries in state.items() if entries},
    }


def delete_group(group_id: str, state: State, members: dict[str, list[Any]]) -> Op:
    return {
        "op": GROUP_DELETE,
        "group": group_id,
        "seen": {name: registers.dots(entries) for name, entries in state.items() if entries},
        "members": members,
    }


# --- checking operations (from the log, a file, or a peer) ------------------------------------


# The keys each kind of operation has, exactly.
_KEYS = {
    REF_PUT: frozenset({"op", "ref", "fields", "seen"}),
    REF_DELETE: frozenset({"op", "ref", "seen"}),
    GROUP_PUT: frozenset({"op", "group", "fields", "seen"}),
    GROUP_DELETE: frozenset({"op", "group", "seen", "members"}),
    MEMBER_ADD: frozenset({"op", "group", "refs"}),
    MEMBER_REMOVE: frozenset({"op", "group", "seen"}),
    ATTACHMENT_PUT: frozenset({"op", "ref", "name", "value", "seen"}),
    DEVICE_ADD: frozenset({"op", "device", "key", "name", "introducer", "signature"}),
    DEVICE_REVOKE: frozenset({"op", "device", "upto"}),
    DEVICE_NAME: frozenset({"op", "name"}),
    GROUPSET_PUT: frozenset({"op", "set", "fields", "seen"}),
    GROUPSET_DELETE: frozenset({"op", "set", "seen"}),
    LIBRARY_NAME: frozenset({"op", "name", "seen"}),
}


def check(op: Any) -> Op:
    """Validate an operation's shape and every value in it; return it unchanged or raise.

    This is the schema every incoming operation must pass before it touches a table.
    """
    if not isinstance(op, dict) or op.get("op") not in KINDS:
        kind = op.get("op") if isinstance(op, dict) else op
        if isinstance(kind, str) and len(kind) <= 40 and kind.isascii() and kind.isprintable():
            # What an older version sees of a newer one's operation: say what to do about it.
            raise InvalidValue(
                f"Unknown operation {kind!r}: a newer version of p2psync wrote it; update p2psync on this "
                "device to receive it."
            )
        raise InvalidValue("Unknown operation: an operation names its kind in 'op'.")
    kind = op["op"]
    expected = _KEYS[kind]
    if op.keys() != expected:
        raise InvalidValue(f"Operation {kind} must have exactly the keys {sorted(expected)}.")
    for key in ("ref", "group", "set"):
        if key in op:
            _check_id(op[key])
    if kind == REF_PUT:
        _check_ref_fields(op["fields"])
        _check_seen_map(op["seen"], allowed=set(op["fields"]))
    elif kind == GROUP_PUT:
        _check_group_fields(op["fields"])
        _check_seen_map(op["seen"], allowed=set(op["fields"]))
    elif kind == GROUPSET_PUT:
        if not isinstance(op["fields"], dict) or set(op["fields"]) != {"name"}:
            raise InvalidValue("A groupset.put operation sets exactly the field 'name'.")
        if validate_set_name(op["fields"]["name"]) != op["fields"]["name"]:
            raise InvalidValue("A group set name in an operation is not in normal form.")
        _check_seen_map(op["seen"], allowed={"name"})
    elif kind == GROUPSET_DELETE:
        _check_seen_map(op["seen"], allowed={"name"})
    elif kind == LIBRARY_NAME:
        if validate_library_name(op["name"]) != op["name"]:
            raise InvalidValue("A library name in an operation is not in normal form.")
        _check_dots(op["seen"])
    elif kind == REF_DELETE:
        _check_seen_map(op["seen"], allowed=set(catalogue.FIELDS) | catalogue.SYSTEM_FIELDS)
    elif kind == GROUP_DELETE:
        _check_seen_map(op["seen"], allowed=set(GROUP_FIELDS))
        _check_seen_map(op["members"], id_keys=True)
    elif kind == MEMBER_ADD:
        refs = op["refs"]
        if not isinstance(refs, list) or not refs or len(refs) > MAX_REFS_PER_OP:
            raise InvalidValue(f"A member.add operation names 1 to {MAX_REFS_PER_OP} references.")
        for ref in refs:
            _check_id(ref)
        if len(set(refs)) != len(refs):
            raise InvalidValue("A member.add operation names a reference twice.")
    elif kind == MEMBER_REMOVE:
        _check_seen_map(op["seen"], id_keys=True)
    elif kind == ATTACHMENT_PUT:
        validate_name(op["name"])
        if op["value"] is not None and validate_manifest(op["value"]) != op["value"]:
            raise InvalidValue("An attachment manifest in an operation is not in normal form.")
        _check_dots(op["seen"])
    elif kind == DEVICE_ADD:
        _check_device_add(op)
    elif kind == DEVICE_REVOKE:
        upto = op["upto"]
        if not is_device_id(op["device"]):
            raise InvalidValue("A device.revoke operation names a device id.")
        if type(upto) is not int or not 0 <= upto <= MAX_INT:
            raise InvalidValue("A device.revoke operation's upto is a sequence number >= 0.")
    elif kind == DEVICE_NAME and not is_device_name(op["name"]):
        raise InvalidValue(
            f"A device.name operation's name is 1 to {MAX_DEVICE_NAME} characters, without control "
            "characters or a space at either end."
        )
    return op


def _check_group_fields(values: Any) -> None:
    """A group.put's fields: some of name, query and set, each in normal form."""
    if not isinstance(values, dict) or not values or not set(values) <= GROUP_FIELDS:
        raise InvalidValue("A group.put operation sets some of the fields 'name', 'query' and 'set', and no other.")
    if "name" in values and validate_group_name(values["name"]) != values["name"]:
        raise InvalidValue("A group name in an operation is not in normal form.")
    if "query" in values and validate_smart_query(values["query"]) != values["query"]:
        raise InvalidValue("A smart group's search in an operation is not in normal form.")
    if "set" in values and values["set"] is not None:
        _check_id(values["set"])


def _check_device_add(op: Op) -> None:
    key, signature = op["key"], op["signature"]
    if not isinstance(key, str) or len(_b64(key, "key")) != 32:
        raise InvalidValue("A device.add operation needs a 32-byte Ed25519 public key in base64.")
    if device_id_for(_b64(key, "key")) != op["device"]:
        raise InvalidValue("A device.add operation's device id does not match its key.")
    name = op["name"]
    if not isinstance(name, str) or not 0 < len(name) <= MAX_DEVICE_NAME:
        raise InvalidValue(f"A device name is 1 to {MAX_DEVICE_NAME} characters.")
    if op["introducer"] is None:
        if signature is not None:
            raise InvalidValue("A founding device.add carries no signature.")
        return
    if not is_device_id(op["introducer"]):
        raise InvalidValue("A device.add introducer must be a device id.")
    if not isinstance(signature, str) or len(_b64(signature, "signature")) != 64:
        raise InvalidValue("A device.add operation needs the introducer's 64-byte signature in base64.")


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"The {what} in a device.add operation is not base64.") from None
    if base64.b64encode(raw).decode("ascii") != text:  # one encoding per value: no stray padding bits
        raise InvalidValue(f"The {what} in a device.add operation is not in canonical base64.")
    return raw


def seen_dots(op: Op) -> list[tuple[str, int]]:
    """Every dot an (already checked) operation says it had seen."""
    found: list[Any] = []
    if op["op"] in (ATTACHMENT_PUT, LIBRARY_NAME):
        found = list(op["seen"])
    elif "seen" in op:
        found = [d for dots in op["seen"].values() for d in dots]
    if op["op"] == GROUP_DELETE:
        found += [d for dots in op["members"].values() for d in dots]
    return [(d[0], d[1]) for d in found]


def _check_id(value: Any) -> None:
    if not isinstance(value, str) or not is_id(value):
        raise InvalidValue(f"{value!r} is not a valid object id.")


def _check_ref_fields(values: Any) -> None:
    if not isinstance(values, dict) or not values:
        raise InvalidValue("A ref.put operation must set at least one field.")
    names: Any = values
    if _speedups is not None and type(values) is dict:
        names = _speedups.unproven_fields(values)  # None: every field proven normal, in C
        if names is None:
            return
    normal = catalogue.NORMAL_CHECKS
    for name in names:
        value = values[name]
        checker = normal.get(name)  # the common case first: a catalogue field in normal form
        if checker is not None and value is not None and checker(value):
            continue
        if name == "trashed":
            if value is not True and value is not None:  # not 1 or 1.0: they encode differently
                raise InvalidValue("The trashed flag is true or null.")
        elif name == "deleted":
            if value is not None:  # only a resolution writes it, to keep a deleted reference
                raise InvalidValue("A ref.put may only clear the deleted mark (null).")
        elif name == "added":
            if type(value) is not int or not 0 <= value <= MAX_INT:
                raise InvalidValue("The added time is a whole number of milliseconds.")
        elif not catalogue.is_normal(name, value):
            catalogue.validate(name, value)  # raises with the precise reason, if there is one
            raise InvalidValue(f"The value of field {name!r} in an operation is not in normal form.")


def _check_seen_map(
    value: Any, allowed: set[str] | None = None, id_keys: bool = False, name_keys: bool = False
) -> None:
    if not isinstance(value, dict):
        raise InvalidValue("A 'seen' map must be an object.")
    for key, dot_list in value.items():
        if allowed is not None and key not in allowed:
            raise InvalidValue(f"A 'seen' map names {key!r}, which the operation does not touch.")
        if id_keys:
            _check_id(key)
        if name_keys:
            validate_name(key)
        _check_dots(dot_list)


def _check_dots(value: Any) -> None:
    if not isinstance(value, list) or len(value) > MAX_DOTS:
        raise InvalidValue("A list of dots must be a list of at most 10,000 [device, seq] pairs.")
    for dot in value:
        if (
            not isinstance(dot, list)
            or len(dot) != 2
            or not is_device_id(dot[0])
            or type(dot[1]) is not int
            or not 1 <= dot[1] <= MAX_INT
        ):
            raise InvalidValue("A dot must be [device id, sequence number >= 1].")
