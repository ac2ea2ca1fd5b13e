"""Group names."""

from __future__ import annotations

from typing import Any

from p2psync.errors import InvalidValue

MAX_GROUP_NAME = 200
SYNC_CONFLICTS = "Sync Conflicts"  # the system group of conflicted references (sync engine)
SYNC_CONFLICTS_ID = "sync-conflicts"  # derived from the conflicts themselves, never stored


def validate_group_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidValue("A group name must be text.")
    clean = " ".join(name.split())
    if not clean:
        raise InvalidValue("A group name cannot be empty.")
    if len(clean) > MAX_GROUP_NAME:
        raise InvalidValue(f"A group name can be at most {MAX_GROUP_NAME} characters.")
    return clean
