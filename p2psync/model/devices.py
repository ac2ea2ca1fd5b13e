"""Device ids: derived from a device's Ed25519 public key.

SHA-256 of the raw 32-byte key, base32, first 32 characters (160 bits): a peer that pins a key
pins an id and vice versa. People see the short form, the first seven characters.
"""

from __future__ import annotations

import base64
import hashlib
import re

DEVICE_ID_LENGTH = 32
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
