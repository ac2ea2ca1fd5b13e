"""The library's member devices: who they are, introducing one, removing one.

Membership is replicated like everything else (engine/ops.py `device.add`, `device.revoke`,
`device.name`): the founding device introduces itself, every other device is introduced by a
member whose key signs the introduction (`device_add_op`), a revocation sets the last sequence of
that device's that anyone accepts, and a device renames itself (its latest name is shown).
"""

from __future__ import annotations

import base64
import socket
from typing import TYPE_CHECKING, Any

from p2psync.crypto.identity import DeviceIdentity, introduction_message
from p2psync.engine import ops
from p2psync.errors import Conflict, UnknownDevice
from p2psync.model.devices import short_id, validate_device_name
from p2psync.store.library.records import Device

if TYPE_CHECKING:
    from p2psync.store.library import Library


# What removing a device does, in the words both faces use (`peers remove`, the Devices page).
REMOVAL_EXPLAINED = (
    "Its changes made after what this machine has seen from it are refused by every member that receives "
    "the removal. It cannot be undone; pair the device again to bring it back as new."
)


def removal_question(target: Device) -> str:
    return f"Remove device {target.short_id} ({target.name}) from this library on every machine?"


def removed_sentence(removed: Device) -> str:
    return f"Removed {removed.short_id} ({removed.name}); the removal reaches the others with the next sync."


def renamed_sentence(renamed: Device) -> str:
    return f"This device ({renamed.short_id}) is now named {renamed.name!r}; the others learn it at the next sync."


class Members:
    def __init__(self, library: Library) -> None:
        self.library = library

    def listing(self) -> list[Device]:
        """The library's member devices, oldest introduction first: by timestamp, then author and seq,
        the same order on every device (concurrent introductions arrive in different orders)."""
        rows = self.library.db.execute(
            "SELECT d.id, coalesce(n.name, d.name), d.introducer, d.public_key, v.upto FROM devices d "
            "LEFT JOIN revocations v ON v.device = d.id LEFT JOIN device_names n ON n.device = d.id "
            "JOIN changelog c ON c.device = d.author AND c.seq = d.seq ORDER BY c.ts, c.device, c.seq"
        ).fetchall()
        return [Device(i, short_id(i), n, k, p, i == self.library.device_id, r is not None) for i, n, k, p, r in rows]

    def this(self) -> Device:
        """This device as listed; while it is not a member (yet: a library that joined an account
        is rebased first and receives its membership with the first pull), as it will be listed."""
        for device in self.listing():
            if device.this_device:
                return device
        me = self.library.device_id
        public_key = base64.b64encode(self.library.identity().public_bytes).decode("ascii")  # as device.add has it
        return Device(me, short_id(me), self.this_name(), None, public_key, True, False)

    def this_name(self) -> str:
        """The name this device has in the library's membership (what other devices call it)."""
        row = self.library.db.execute(
            "SELECT coalesce(n.name, d.name) FROM devices d LEFT JOIN device_names n ON n.device = d.id WHERE d.id = ?",
            [self.library.device_id],
        ).fetchone()
        return str(row[0]) if row else self.library.name

    def rename(self, text: str) -> Device:
        """Rename this device for every member (a device.name operation, replicated like any
        change); the same name again changes nothing. Returns this device as listed now."""
        name = validate_device_name(text)
        with self.library.writing() as writer:
            if name != self.this_name():
                writer.log(ops.device_rename(name), checked=True)
        return self.this()

    def add(self, public_key: bytes, name: str) -> str:
        """Introduce another device into this library (pairing does this); return its id."""
        new = DeviceIdentity.from_public(public_key)
        library = self.library
        with library.writing() as writer:
            writer.log(
                device_add_op(new, name[: ops.MAX_DEVICE_NAME] or "device", library.identity(), library.library_id)
            )
        return new.device_id

    def find(self, prefix: str) -> Device:
        """The one member whose id starts with `prefix` (any case), or UnknownDevice."""
        matches = [d for d in self.listing() if prefix and d.device_id.startswith(prefix.upper())]
        if len(matches) != 1:
            raise UnknownDevice(f"No single member device matches {prefix!r}; see 'p2psync peers'.")
        return matches[0]

    def revoke(self, device: str) -> Device:
        """Remove a device from the library: nothing it writes after what we have seen is accepted."""
        target = self.find(device)
        if target.this_device:
            raise Conflict("This device cannot remove itself; remove it from another machine.")
        db = self.library.db
        with self.library.writing() as writer:
            row = db.execute("SELECT max(last) FROM changesets WHERE author = ?", [target.device_id]).fetchone()
            writer.log(ops.device_revoke(target.device_id, int(row[0] or 0)))
        return target


def device_name() -> str:
    """A name for this machine that people recognise (its host name)."""
    return (socket.gethostname() or "device")[: ops.MAX_DEVICE_NAME]


def device_add_op(
    new: DeviceIdentity, name: str, introducer: DeviceIdentity | None, library_id: str | None
) -> dict[str, Any]:
    """The operation that makes `new` a member, introduced (signed) by `introducer` if given."""
    signature = None
    if introducer is not None:
        assert library_id is not None
        message = introduction_message(library_id, new.device_id, new.public_bytes)
        signature = base64.b64encode(introducer.sign(message)).decode("ascii")
    key = base64.b64encode(new.public_bytes).decode("ascii")
    return ops.device_add(new.device_id, key, name, introducer.device_id if introducer else None, signature)
