"""Joining another library by pairing: this library becomes part of the other one.

Change sets are signed for one library id, so a library cannot simply take another id: its log
would not verify there. Instead, in one transaction, `rebase` sets the current content aside in a
local table (`merge_stash`: references with their fields and trash state, groups with their
members, attachment manifests), empties every replicated table, and takes the other library's id
and name. The first sync then brings the other library, and `finish_merge` writes the set-aside
content back as new changes by this device, in one transaction, merging each reference that is
plainly identical to one already there (model/duplicates.py) instead of doubling it.

A crash between the two steps loses nothing: the stash stays until `finish_merge` has run, and
every sync runs it (net/client.py) once the other library has arrived. Attachment files never
move for references that are written back (they keep their ids); a merged reference's files are
hard-linked (or copied) to the reference they merge into before that transaction commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.engine import ops, registers
from p2psync.engine.canonical import dumps
from p2psync.model import duplicates
from p2psync.model.ids import new_id
from p2psync.store import folder, schema
from p2psync.store.apply import load_ref
from p2psync.store.db import write_transaction
from p2psync.store.files import fsync_dir
from p2psync.store.library import ATTACHMENTS_DIR, Library

# Tables emptied when a library joins another: the replicated ones, and the local ones that
# describe syncing the old library (its change sets, peers and problems).
_EMPTIED = (*schema.REPLICATED_TABLES, "changesets", "search_backlog", "peer_status", "sync_problems")
REVIEW_GROUP = "Duplicates to review"
_SKIPPED_FIELDS = {"added", "trashed"}  # not compared when deciding whether two references are the same


@dataclass
class Content:
    """How much a library brings to a merge."""

    references: int
    groups: int
    attachments: int
    trash: int = 0  # of the references, those in the trash (the merge question says so)

    def as_dict(self) -> dict[str, int]:
        return {
            "references": self.references,
            "groups": self.groups,
            "attachments": self.attachments,
            "trash": self.trash,
        }


@dataclass
class MergeReport:
    """What finish_merge did."""

    added: int = 0
    merged: list[dict[str, str]] = field(default_factory=list)  # {"ours", "theirs", "title"}
    to_review: list[dict[str, str]] = field(default_factory=list)  # same keys, some fields differ
    groups_added: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "merged": self.merged,
            "to_review": self.to_review,
            "groups_added": self.groups_added,
        }


def content(library: Library) -> Content:
    """What this library would bring to another: references (trash included), groups, attachments."""
    count = lambda sql: int(library.db.execute(sql).fetchone()[0])  # noqa: E731
    return Content(
        references=count("SELECT count(*) FROM refs WHERE deleted = 0"),
        groups=count("SELECT count(*) FROM groups WHERE name IS NOT NULL"),
        attachments=count(
            "SELECT count(*) FROM attachments a JOIN refs r ON r.id = a.ref_id "
            "WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
        ),
        trash=count("SELECT count(*) FROM refs WHERE deleted = 0 AND trashed = 1"),
    )


def is_empty(library: Library) -> bool:
    """Nothing to lose by becoming a copy of another library: no references (not even in the
    trash or deleted), no groups, and no other member devices."""
    one = lambda sql: library.db.execute(sql).fetchone() is not None  # noqa: E731
    others = library.db.execute("SELECT 1 FROM devices WHERE id != ? LIMIT 1", [library.device_id]).fetchone()
    return not (one("SELECT 1 FROM refs LIMIT 1") or one("SELECT 1 FROM groups LIMIT 1") or others)


def merge_pending(library: Library) -> bool:
    return library.db.execute("SELECT 1 FROM merge_stash LIMIT 1").fetchone() is not None


def rebase(library: Library, library_id: str, name: str) -> Content:
    """Set this library's content aside and make it an empty member of library `library_id`
    (named `name`), all in one transaction. Returns what was set aside."""
    library.record_local_edits()  # what is set aside is the files as they are now, annotations too
    db = library.db
    with write_transaction(db):
        stashed = content(library)
        db.execute(
            "INSERT OR REPLACE INTO merge_stash (kind, id, body) "
            "SELECT 'ref', id, json_object('data', json(data), 'num', num) FROM refs WHERE deleted = 0"
        )
        # Smart groups keep their search and every group its set (by name): both are written
        # back as they were (issue 23), not as plain, unfiled groups.
        db.execute(
            "INSERT OR REPLACE INTO merge_stash (kind, id, body) "
            "SELECT 'groupset', id, json_object('name', name) FROM group_sets WHERE name IS NOT NULL"
        )
        named_groups = db.execute(
            "SELECT g.id, g.name, g.query, s.name FROM groups g LEFT JOIN group_sets s "
            "ON s.id = g.set_id AND s.name IS NOT NULL WHERE g.name IS NOT NULL"
        ).fetchall()
        for group_id, group_name, query, set_name in named_groups:
            members = [
                r
                for (r,) in db.execute(
                    "SELECT m.ref_id FROM memberships m JOIN refs r ON r.id = m.ref_id "
                    "WHERE m.group_id = ? AND r.deleted = 0 ORDER BY r.num",
                    [group_id],
                )
            ]
            db.execute(
                "INSERT OR REPLACE INTO merge_stash (kind, id, body) VALUES ('group', ?, ?)",
                [group_id, dumps({"name": group_name, "refs": members, "query": query, "set": set_name})],
            )
        db.execute(
            "INSERT OR REPLACE INTO merge_stash (kind, id, body) "
            "SELECT 'attachment', a.ref_id || '/' || a.name, "
            "json_object('ref', a.ref_id, 'name', a.name, 'size', a.size, 'sha256', a.sha256) "
            "FROM attachments a JOIN refs r ON r.id = a.ref_id WHERE a.sha256 IS NOT NULL AND r.deleted = 0"
        )
        for table in _EMPTIED:
            db.execute(f"DELETE FROM {table}")
        db.execute("INSERT INTO refs_fts (refs_fts) VALUES ('delete-all')")
        db.execute("UPDATE meta SET value = ? WHERE key = 'library_id'", [library_id])
        db.execute("UPDATE meta SET value = ? WHERE key = 'name'", [name])
        # Attachment files of references that are no longer anywhere (permanently deleted) go.
        db.execute("DELETE FROM attachment_files WHERE ref_id NOT IN (SELECT id FROM merge_stash WHERE kind = 'ref')")
    return stashed


def finish_merge(library: Library) -> MergeReport | None:
    """Write the set-aside content into the library it now belongs to (None if nothing is
    waiting). Plainly identical references merge into the copy already here when ours only
    adds fields it lacks; when some field differs, both are kept and listed for review (in the
    group REVIEW_GROUP), so that nothing is lost and nothing is silently doubled."""
    if not merge_pending(library):
        return None
    db = library.db
    report = MergeReport()
    links: list[tuple[Path, Path]] = []  # files to hard-link before committing
    with library.writing() as writer:
        stash: dict[str, list[dict[str, Any]]] = {"ref": [], "group": [], "attachment": [], "groupset": []}
        for kind, item_id, body in db.execute("SELECT kind, id, body FROM merge_stash ORDER BY kind, id"):
            stash[kind].append(json.loads(body) | {"id": item_id})
        index = _duplicate_index(library)
        target: dict[str, str] = {}  # our reference id -> the id it lives on as
        review: list[str] = []
        for item in sorted(stash["ref"], key=lambda r: r["num"]):
            data = {k: v for k, v in item["data"].items() if v is not None}
            match = next((index[k] for k in _keys(data) if k in index), None)
            if match is not None:
                theirs = load_ref(db, match)
                pair = {"ours": item["id"], "theirs": match, "title": str(data.get("title", ""))}
                if _only_adds(data, theirs.data):
                    missing = {k: v for k, v in data.items() if k not in theirs.data and k not in _SKIPPED_FIELDS}
                    if missing:
                        op = ops.put_fields(ops.REF_PUT, "ref", match, theirs.state, missing)
                        if op is not None:
                            writer.log(op)
                    target[item["id"]] = match
                    report.merged.append(pair)
                    continue
                report.to_review.append(pair)
                review += [item["id"], match]
            writer.log(ops.ref_put(item["id"], data))
            target[item["id"]] = item["id"]
            for key in _keys(data):
                index.setdefault(key, item["id"])
            report.added += 1

        named_sets = db.execute("SELECT id, name FROM group_sets WHERE name IS NOT NULL")
        sets_here = {name.casefold(): set_id for set_id, name in named_sets}
        for group_set in stash["groupset"]:
            if group_set["name"].casefold() not in sets_here:
                writer.log(ops.groupset_put(group_set["id"], group_set["name"]))
                sets_here[group_set["name"].casefold()] = group_set["id"]
        named = db.execute("SELECT id, name FROM groups WHERE name IS NOT NULL")
        groups_here = {name.casefold(): group_id for group_id, name in named}
        for group in stash["group"]:
            group_id = groups_here.get(group["name"].casefold())
            if group_id is None:
                group_id = group["id"]
                in_set = sets_here.get(group["set"].casefold()) if group.get("set") else None
                writer.log(ops.group_put(group_id, group["name"], query=group.get("query"), group_set=in_set))
                groups_here[group["name"].casefold()] = group_id
                report.groups_added += 1
            if group.get("query") is None and library.groups.query_of(group_id) is None:  # never fill a smart one
                _add_members(writer, db, group_id, [target[r] for r in group["refs"] if r in target])
        if review:
            group_id = groups_here.get(REVIEW_GROUP.casefold())
            if group_id is None:
                group_id = new_id()
                writer.log(ops.group_put(group_id, REVIEW_GROUP))
            _add_members(writer, db, group_id, review)

        for att in stash["attachment"]:
            ref_id = target.get(att["ref"])
            if ref_id is None:
                continue
            name = att["name"]
            existing = _attachment_value(db, ref_id, name)
            if ref_id != att["ref"]:
                if existing is not None and existing.get("sha256") == att["sha256"]:
                    continue  # the same file is already there
                if existing is not None:
                    name = _free_name(db, ref_id, name)
                links.append((library.attachment_file(att["ref"], att["name"]), library.attachment_file(ref_id, name)))
            entries = json.loads(row[0]) if (row := _attachment_row(db, ref_id, name)) else []
            manifest = {"size": att["size"], "sha256": att["sha256"]}
            writer.log(ops.attachment_put(ref_id, name, manifest, registers.dots(entries)))
        for source, destination in links:
            if _link(source, destination, folder.incoming_path(library, destination.name)):
                stat = destination.stat()
                db.execute(
                    "INSERT OR REPLACE INTO attachment_files (ref_id, name, size, sha256, mtime_ns) "
                    "SELECT ?, ?, size, sha256, ? FROM attachment_files WHERE ref_id = ? AND name = ?",
                    [destination.parent.name, destination.name, stat.st_mtime_ns, source.parent.name, source.name],
                )
        for merged in report.merged:
            db.execute("DELETE FROM attachment_files WHERE ref_id = ?", [merged["ours"]])
        db.execute("DELETE FROM merge_stash")
    # After the commit: the merged references' own folders are no longer anyone's.
    for merged in report.merged:
        shutil.rmtree(library.path / ATTACHMENTS_DIR / merged["ours"], ignore_errors=True)
    return report


def _keys(data: dict[str, Any]) -> list[str]:
    return [*duplicates.duplicate_keys(data), duplicates.identical_key(data)]


def _duplicate_index(library: Library) -> dict[str, str]:
    index: dict[str, str] = {}
    for ref_id, data in library.db.execute("SELECT id, data FROM refs WHERE deleted = 0 ORDER BY num"):
        for key in _keys(json.loads(data)):
            index.setdefault(key, ref_id)
    return index


def _only_adds(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Every field both have is equal: merging ours into theirs loses nothing."""
    return all(_same(k, theirs[k], v) for k, v in ours.items() if k in theirs and k not in _SKIPPED_FIELDS)


def _same(name: str, a: Any, b: Any) -> bool:
    if name == "doi" and isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()  # DOIs are case-insensitive
    return bool(a == b)


def _add_members(writer: Any, db: Any, group_id: str, refs: list[str]) -> None:
    present = {r for (r,) in db.execute("SELECT ref_id FROM memberships WHERE group_id = ?", [group_id])}
    new = list(dict.fromkeys(r for r in refs if r not in present))
    for start in range(0, len(new), ops.MAX_REFS_PER_OP):
        writer.log(ops.member_add(group_id, new[start : start + ops.MAX_REFS_PER_OP]))


def _attachment_row(db: Any, ref_id: str, name: str) -> Any:
    return db.execute("SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]).fetchone()


def _attachment_value(db: Any, ref_id: str, name: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT size, sha256 FROM attachments WHERE ref_id = ? AND name = ? AND sha256 IS NOT NULL", [ref_id, name]
    ).fetchone()
    return {"size": row[0], "sha256": row[1]} if row else None


def _free_name(db: Any, ref_id: str, name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for n in range(2, 1000):
        candidate = f"{stem} ({n}){dot}{ext}"
        if _attachment_row(db, ref_id, candidate) is None:
            return candidate
    return f"{stem} ({new_id()[:8]}){dot}{ext}"


def _link(source: Path, destination: Path, staging: Path) -> bool:
    """Make `destination` the same file as `source` (a hard link; a whole copy where links are
    not possible), through `staging`, a new name of p2psync's own. A file that is missing here
    is simply fetched later, like any other."""
    if not source.is_file():
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, staging)
    except OSError:
        shutil.copy2(source, staging)
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(staging, destination)
    folder.remove_incoming(staging)  # (its folder)
    with contextlib.suppress(OSError):
        fsync_dir(destination.parent)
    return True
