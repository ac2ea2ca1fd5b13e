"""The records the library hands out: what the CLI prints and `--json` writes.

Each is a frozen dataclass whose `as_dict()` is its `--json` form, made at the CLI's edge; the
rooms hand out the records and the Library face keeps the old dicts (`list_references`,
`get_reference`, `search`, `devices`) for the callers that read them by key: the file formats,
which map catalogue fields by name, and the tests.

A reference's catalogue fields vary with its type, so they stay one mapping of field name to
value (`ReferenceRow.fields`, in catalogue order); everything around them is an attribute.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from p2psync.engine import merge, registers
from p2psync.model import fields as catalogue


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ReferenceRow:
    """One reference as `ref list` and `ref search` show it (one `refs` row)."""

    id: str
    fields: Mapping[str, Any]  # catalogue field -> provisional value, in catalogue order
    trashed: bool
    added: str | None
    modified: str | None
    conflicts: tuple[str, ...] = ()  # the fields whose versions disagree, sorted

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ReferenceRow:
        data = json.loads(row["data"])
        conflicts: list[str] = []
        if row["conflict"]:  # set exactly when the registers hold conflicting versions
            conflicts = merge.reference_view(registers.unpack(json.loads(row["state"]), data)).conflicts
        return cls(
            id=row["id"],
            fields={name: data[name] for name in catalogue.FIELDS if name in data},
            trashed=bool(row["trashed"]),
            added=iso(row["added"]),
            modified=iso(row["modified"]),
            conflicts=tuple(conflicts),
        )

    @property
    def title(self) -> str | None:
        title: str | None = self.fields.get("title")
        return title

    @property
    def people(self) -> list[dict[str, Any]]:
        """The authors, else the editors: who a one-line listing names."""
        people: list[dict[str, Any]] = self.fields.get("authors") or self.fields.get("editors") or []
        return people

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, **self.fields}
        record.update(trashed=self.trashed, added=self.added, modified=self.modified)
        if self.conflicts:
            record["conflicts"] = list(self.conflicts)
        return record


@dataclass(frozen=True)
class GroupName:
    """A group a reference is in, as `ref show` names it."""

    id: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class GroupRow:
    """A group as `group list` shows it: how many references (not in the trash) it holds; a smart
    group's are those that match its search now."""

    id: str
    name: str
    references: int
    conflict: bool  # its name is in conflict between devices
    query: str | None = None  # a smart group's search; None for a plain group
    set: str | None = None  # the id of the group set it is filed in (None: unfiled)

    @property
    def smart(self) -> bool:
        return self.query is not None

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["smart"] = self.smart
        return record


@dataclass(frozen=True)
class GroupSetRow:
    """A group set (a named folder of groups) with the groups filed in it, by name."""

    id: str
    name: str
    conflict: bool  # its name is in conflict between devices
    groups: tuple[GroupRow, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "conflict": self.conflict,
            "groups": [g.as_dict() for g in self.groups],
        }


@dataclass(frozen=True)
class ReferenceDetail(ReferenceRow):
    """One reference as `ref show` shows it: the row, its groups and its attachments."""

    groups: tuple[GroupName, ...] = ()  # led by the system group Sync Conflicts while in conflict
    attachment_conflicts: tuple[str, ...] = ()  # 'attachment:NAME' of each attachment in conflict
    attachments: tuple[dict[str, Any], ...] = ()  # Attachments.listing's items

    @property
    def all_conflicts(self) -> tuple[str, ...]:
        return self.conflicts + self.attachment_conflicts

    def as_dict(self) -> dict[str, Any]:
        record = ReferenceRow.as_dict(self)
        record["groups"] = [g.as_dict() for g in self.groups]
        if self.attachment_conflicts:  # (a key the row already has keeps its place, as it always did)
            record["conflicts"] = list(self.all_conflicts)
        record["attachments"] = list(self.attachments)
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
