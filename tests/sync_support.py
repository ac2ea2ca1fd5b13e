"""Helpers for sync tests: joined replicas and a digest of what a library shows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries


def founded(path: Path, name: str = "A") -> Library:
    return Library.create(path, name)


def joined(founder: Library, path: Path, name: str) -> Library:
    """A new empty library on another 'machine', introduced by the founder and synced once."""
    joiner = Library.create(path, name, found=False, library_id=founder.library_id)
    founder.add_device(joiner.identity().public_bytes, name)
    sync_libraries(founder, joiner)
    return joiner


def view(library: Library) -> dict[str, Any]:
    """Everything a user can see, in a canonical form (the content digest compares these)."""
    refs = []
    for trashed in (False, True):
        for record in library.list_references(trashed=trashed):
            record = dict(record)
            record["groups"] = [g["name"] for g in library.get_reference(record["id"])["groups"]]
            record["attachments"] = [
                (a["name"], a["size"], a["sha256"], a["conflict"])
                for a in library.list_attachments(record["id"], scan=False)
            ]
            record["versions"] = library.reference_versions(record["id"]) if record.get("conflicts") else {}
            for item in record["versions"].values():
                for version in item:
                    version.pop("this_device")
                    if isinstance(version.get("value"), dict):  # an attachment version: where its file
                        version["value"].pop("path", None)  # is, and whether it is here yet, are this
                        version["value"].pop("present", None)  # machine's own business, not replicated
            refs.append(record)
    groups = [(g["id"], g["name"], g["references"], g["conflict"], g["query"], g["set"]) for g in library.list_groups()]
    groups += [(s.id, s.name, [g.id for g in s.groups], s.conflict) for s in library.sets.rows()]
    devices = [(d["device_id"], d["name"], d["introducer"], d["revoked"]) for d in library.devices()]
    return {"refs": sorted(refs, key=lambda r: r["id"]), "groups": groups, "devices": devices}


def digest(library: Library) -> str:
    return hashlib.sha256(json.dumps(view(library), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def sync_all(libraries: list[Library]) -> None:
    """Sync every pair until nothing moves (two rounds always suffice for full two-way syncs)."""
    for _ in range(2):
        for i, a in enumerate(libraries):
            for b in libraries[i + 1 :]:
                sync_libraries(a, b)
