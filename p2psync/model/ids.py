"""Stable random ids for references, groups and libraries.

Ids are made on the machine that creates the object and never change. 80 random bits are written
as 16 lowercase base32 characters: enough that 100,000 references on many machines never collide,
short enough to type, and the CLI accepts any unique prefix (like git).
"""

from __future__ import annotations

import base64
import re
import secrets

ID_LENGTH = 16
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
ID_PATTERN = re.compile(r"[a-z2-7]{16}")  # used with fullmatch
PREFIX_PATTERN = re.compile(r"[a-z2-7]{1,16}")


def new_id() -> str:
    """A fresh random object id."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def is_id(text: str) -> bool:
    return bool(ID_PATTERN.fullmatch(text))


def is_id_prefix(text: str) -> bool:
    return bool(PREFIX_PATTERN.fullmatch(text))
