"""Device ids: derived from a device's Ed25519 public key.

SHA-256 of the raw 32-byte key, base32, first 32 characters (160 bits): a peer that pins a key
pins an id and vice versa. People see the short form, the first seven characters.
"""

from __future__ import annotations

import base64
import hashlib
import re

from p2psync.errors import InvalidValue

DEVICE_ID_LENGTH = 32
MAX_DEVICE_NAME = 100  # characters; engine/ops.py checks names in operations with the same rule
# C0 and C1 control characters and DEL: a name is shown on one line, in terminals and pages.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SHORT_ID_LENGTH = 7
DEVICE_ID_PATTERN = re.compile(r"[A-Z2-7]{32}")


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and DEVICE_ID_PATTERN.fullmatch(value) is not None


def device_id_for(public_key: bytes) -> str:
    digest = hashlib.sha256(public_key).digest()
    return base64.b32encode(digest).decode("ascii")[:DEVICE_ID_LENGTH]


def short_id(device_id: str) -> str:
    return device_id[:SHORT_ID_LENGTH]


def library_id_for(founder_public_key: bytes) -> str:
    """A library's id is derived from its founding device's key, so that any machine can check a
    founding claim without trusting anyone: 80 bits, lowercase base32 like other object ids."""
    digest = hashlib.sha256(b"p2psync/1 library\x00" + founder_public_key).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def is_device_name(value: object) -> bool:
    """The rule for a name in an operation: 1 to 100 characters, no control character, no space
    at either end (protocol/merge.md, device.name)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_DEVICE_NAME
        and not value.startswith(" ")
        and not value.endswith(" ")
        and _CONTROL.search(value) is None
    )


def validate_device_name(text: str) -> str:
    """A device name in normal form (without surrounding spaces), or one sentence saying why not."""
    name = text.strip()
    if not name:
        raise InvalidValue("A device name cannot be empty.")
    if len(name) > MAX_DEVICE_NAME:
        raise InvalidValue(f"A device name is at most {MAX_DEVICE_NAME} characters; this one has {len(name)}.")
    if _CONTROL.search(name):
        raise InvalidValue("A device name cannot contain control characters such as line breaks or tabs.")
    return name
