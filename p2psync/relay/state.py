"""The library's link to its relay account, as this machine records it (meta rows), without the
network: what `status` shows, what `sync` and `account` start from.

The rows (their SQL is in store/relay_state.py): relay_url, relay_email, relay_account,
relay_token, relay_key (the library key, base64), relay_cursor (the highest `num` pulled up to
which everything was applied), relay_last_sync, relay_last_moved, relay_last_error (and _at),
relay_chunks (how many chunks the account held at the last sync: fewer now means a purge), and
one relay_pushed:SHA256 row per attachment file whose chunks are all on the relay (forgotten at
each login and purge, so a relay that lost chunks is given them again). relay/keys.py keeps the
keys of every epoch beside relay_key. Every write to them is one transaction.

Kept apart from link.py, which talks to the relay (aiohttp), so a local command reads the link
without importing the HTTP client (docs/performance.md: start-up). The account's device id needs
the relay's key derivation, imported only when there is a key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from p2psync.engine import clock
from p2psync.errors import RelayNotLinked
from p2psync.store import relay_state
from p2psync.store.library import Library, iso
from p2psync.store.relay_state import PEER, PUSHED_PREFIX
from p2psync.store.relay_state import as_count as int_or_zero

# What removing a device adds for a library linked to an online account (docs/security.md, the
# relay): `peers remove` and the Devices page say it.
REMOVAL_ADVICE = (
    "At this library's next sync with the relay, the removed device is cut off there and the library key "
    "changes, so it reads nothing written afterwards; sync now ('p2psync sync'). If that device knew the "
    "account's password, change the password too ('p2psync account password'): with it, any machine can "
    "log in again as a new device."
)

__all__ = [
    "KEYS",
    "KEY_BYTES",
    "PEER",
    "PUSHED_PREFIX",
    "LinkState",
    "int_or_zero",
    "is_linked",
    "logged_in",
    "read_link",
    "record_error",
    "summary",
]

KEY_BYTES = 32  # the library key's length (relay/crypto.py KEY_BYTES; a test holds them equal)

KEYS = (  # the link's rows in the meta table
    "relay_url",
    "relay_email",
    "relay_account",
    "relay_token",
    "relay_key",
    "relay_cursor",
    "relay_last_sync",
    "relay_last_moved",
    "relay_last_error",
    "relay_last_error_at",
)


@dataclass(frozen=True)
class LinkState:
    url: str | None = None
    email: str | None = None
    account: str | None = None
    token: str | None = None
    key: bytes | None = None
    cursor: int = 0
    last_sync: int | None = None
    last_moved: dict[str, Any] | None = None
    last_error: str | None = None
    last_error_at: int | None = None

    @property
    def linked(self) -> bool:
        return self.url is not None

    @property
    def logged_in(self) -> bool:
        return self.token is not None and self.key is not None


def read_link(library: Library) -> LinkState:
    rows = relay_state.read_rows(library, KEYS)
    key: bytes | None = None
    if rows.get("relay_key"):
        try:
            key = base64.b64decode(rows["relay_key"], validate=True)
        except (binascii.Error, ValueError):
            key = None
        if key is not None and len(key) != KEY_BYTES:
            key = None
    moved: dict[str, Any] | None = None
    if rows.get("relay_last_moved"):
        with contextlib.suppress(ValueError):
            moved = orjson.loads(rows["relay_last_moved"])
    return LinkState(
        url=rows.get("relay_url"),
        email=rows.get("relay_email"),
        account=rows.get("relay_account"),
        token=rows.get("relay_token"),
        key=key,
        cursor=int_or_zero(rows.get("relay_cursor")),
        last_sync=int_or_zero(rows.get("relay_last_sync")) or None,
        last_moved=moved,
        last_error=rows.get("relay_last_error"),
        last_error_at=int_or_zero(rows.get("relay_last_error_at")) or None,
    )


def is_linked(library: Library) -> bool:
    return read_link(library).linked


def logged_in(library: Library) -> LinkState:
    """The link of a device logged in to its account; RelayNotLinked says what to do otherwise."""
    link = read_link(library)
    if not link.linked:
        raise RelayNotLinked(
            "This library is not linked to a relay account; sign up or log in with 'p2psync account signup' "
            "or 'p2psync account login'."
        )
    if not link.logged_in:
        raise RelayNotLinked(
            f"This device is logged out of the account {link.email} on {link.url}; log in with "
            f"'p2psync account login --relay {link.url} --email {link.email}'."
        )
    return link


def record_error(library: Library, message: str) -> None:
    relay_state.write_rows(library, {"relay_last_error": message, "relay_last_error_at": clock.now_ms()})


def summary(library: Library) -> dict[str, Any] | None:
    """What `status` shows of the relay (from this machine's records, no network)."""
    link = read_link(library)
    if not link.linked:
        return None
    return {
        "relay": link.url,
        "email": link.email,
        "account": link.account,
        "logged_in": link.logged_in,
        "cursor": link.cursor,
        "last_sync": iso(link.last_sync),
        "moved": link.last_moved,
        "last_error": link.last_error,
        "last_error_at": iso(link.last_error_at),
        "account_device": _account_device(link.key),
    }


def _account_device(key: bytes | None) -> str | None:
    if key is None:
        return None
    from p2psync.relay import crypto  # cryptography's AEAD and KDFs: only for a linked library

    return crypto.account_identity(key).device_id
