"""What this machine remembers about each peer (local, never synced): where it was reached, when
it last synced, what moved, and the last error in words, for `p2psync status` (`PeerStatus`)."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from p2psync.engine import clock
from p2psync.store.db import write_transaction
from p2psync.store.library import Library, iso


def member_keys(library: Library) -> dict[bytes, str]:
    """Ed25519 key -> device id, for every member that is not revoked (this device included)."""
    return {base64.b64decode(d.public_key): d.device_id for d in library.members.listing() if not d.revoked}


def record_success(library: Library, device: str, address: str | None, received: int | None, sent: int | None) -> None:
    """A sync with `device` worked: ours with it, or its pull or push on our server (which says
    only one of `received`, `sent`; None keeps what was recorded), so `status` on either side
    says what moved, pushes included."""
    now = clock.now_ms()
    with write_transaction(library.db):
        library.db.execute(
            "INSERT INTO peer_status (device, address, last_seen, last_sync, received, sent) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET address = coalesce(excluded.address, address), "
            "last_seen = excluded.last_seen, last_sync = excluded.last_sync, received = coalesce(?, received), "
            "sent = coalesce(?, sent), last_error = NULL, last_error_at = NULL",
            [device, address, now, now, received or 0, sent or 0, received, sent],
        )


def record_error(library: Library, device: str, address: str | None, message: str) -> None:
    now = clock.now_ms()
    with write_transaction(library.db):
        library.db.execute(
            "INSERT INTO peer_status (device, address, last_error, last_error_at) VALUES (?, ?, ?, ?) "
            # A failed attempt somewhere else does not replace the address that worked last.
            "ON CONFLICT (device) DO UPDATE SET address = coalesce(address, excluded.address), "
            "last_error = excluded.last_error, last_error_at = excluded.last_error_at",
            [device, address, message, now],
        )


def record_seen(library: Library, device: str, address: str) -> None:
    with write_transaction(library.db):
        library.db.execute(
            "INSERT INTO peer_status (device, address, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET address = excluded.address, last_seen = excluded.last_seen",
            [device, address, clock.now_ms()],
        )


def forget_address(library: Library, device: str, address: str) -> None:
    """The address remembered for `device` turned out to be another (this device, say)."""
    with write_transaction(library.db):
        library.db.execute("UPDATE peer_status SET address = NULL WHERE device = ? AND address = ?", [device, address])


def remembered_addresses(library: Library) -> dict[str, str]:
    """device -> the address it was last reached at."""
    return {d: a for d, a in library.db.execute("SELECT device, address FROM peer_status WHERE address IS NOT NULL")}


@dataclass(frozen=True)
class PeerStatus:
    """Another member device and what this machine knows of it; times are ISO 8601 text, None
    for never, and `received`/`sent` count the change sets of the last sync that worked."""

    device_id: str
    short_id: str
    name: str
    revoked: bool
    address: str | None = None
    last_seen: str | None = None
    last_sync: str | None = None
    received: int = 0
    sent: int = 0
    last_error: str | None = None
    last_error_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def peer_status(library: Library) -> list[PeerStatus]:
    """Every other member device with what this machine knows of it."""
    rows = {
        r[0]: r
        for r in library.db.execute(
            "SELECT device, address, last_seen, last_sync, received, sent, last_error, last_error_at FROM peer_status"
        )
    }
    out = []
    for device in library.members.listing():
        if device.this_device:
            continue
        who = (device.device_id, device.short_id, device.name, device.revoked)
        row = rows.get(device.device_id)
        if row is None:  # never talked to
            out.append(PeerStatus(*who))
            continue
        _, address, seen, synced, received, sent, error, error_at = row
        out.append(PeerStatus(*who, address, iso(seen), iso(synced), received, sent, error, iso(error_at)))
    return out


# --- a pairing whose first sync has not finished ---------------------------------------------------

_JOIN_PIN = "join_pin"


def pin_join(library: Library, device: str, public_key: bytes) -> None:
    """Remember the key a pairing code confirmed, before this library joins that device's library:
    if the first sync fails (a full disk, a cut cable), a later `sync` can still finish it, since
    until the membership arrives nothing else says that key belongs to the library."""
    with write_transaction(library.db):
        library.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [_JOIN_PIN, json.dumps({"device": device, "key": public_key.hex()})],
        )


def join_pins(library: Library, members: dict[bytes, str]) -> dict[bytes, str]:
    """The pinned key (key -> device) while its device is not yet a member here; forgotten once
    the membership has arrived, so it never outlives the first sync."""
    row = library.db.execute("SELECT value FROM meta WHERE key = ?", [_JOIN_PIN]).fetchone()
    if row is None:
        return {}
    pin = json.loads(row[0])
    if pin["device"] in members.values():
        with write_transaction(library.db):
            library.db.execute("DELETE FROM meta WHERE key = ?", [_JOIN_PIN])
        return {}
    return {bytes.fromhex(pin["key"]): pin["device"]}
