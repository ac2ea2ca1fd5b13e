"""The records the library hands out: what the CLI prints and `--json` writes.

A reference's fields vary with its type, so a reference stays the dict the CLI has always read
(`public_reference`, from one `refs` row). A member device has a fixed shape, so it is a frozen
dataclass (`Device`) whose `as_dict()` is the `--json` form; `Library.devices()` still hands out
those dicts, which is what the CLI and the relay read by key today.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from p2psync.engine import merge, registers
from p2psync.model import fields as catalogue


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_reference(row: dict[str, Any]) -> dict[str, Any]:
    """The user-facing form of a refs row."""
    data = json.loads(row["data"])
    record: dict[str, Any] = {"id": row["id"]}
    for name in catalogue.FIELDS:
        if name in data:
            record[name] = data[name]
    record["trashed"] = bool(row["trashed"])
    record["added"] = iso(row["added"])
    record["modified"] = iso(row["modified"])
    if row["conflict"]:
        record["conflicts"] = merge.reference_view(registers.unpack(json.loads(row["state"]), data)).conflicts
    return record


@dataclass(frozen=True)
class Device:
    """A member device of the library, as `p2psync peers` shows it."""

    device_id: str
    short_id: str
    name: str
    introducer: str | None
    public_key: str
    this_device: bool
    revoked: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
