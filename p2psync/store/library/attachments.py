"""Attachments as a person sees them: attaching a file, listing, opening, exporting, removing,
and noticing files edited in place.

An attachment is a register per (reference, file name) whose value is the file's manifest
(model/chunking.py); the file itself is `attachments/REF/NAME` (store/folder.py), recorded in the
local `attachment_files` with its size, mtime and hash, its chunks in `chunk_index`. A new file
is copied beside its target first and renamed into place inside the transaction that records
it, so a crash leaves the old version or the new one. A file edited in place is noticed by size
and mtime, confirmed by its hash, and recorded as a new version that has seen only the version
the file held (`scan`); a missing file is only reported, never turned into a delete. Fetching
versions from peers and keeping the disk in step with the registers is store/transfers.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2psync.engine import ops, registers
from p2psync.errors import FileProblem, InvalidValue, LibraryCorrupt, UnknownAttachment
from p2psync.model.attachments import validate_name
from p2psync.model.chunking import manifest_of
from p2psync.store import folder, transfers
from p2psync.store.files import copy_atomic, fsync_dir
from p2psync.store.library.records import iso

if TYPE_CHECKING:
    from p2psync.store.library import Library

ATTACHMENT_FIELD = "attachment:"  # how a conflicted attachment is named among a reference's conflicts


class Attachments:
    def __init__(self, library: Library) -> None:
        self.library = library
        # Files edited in place past MAX_CHUNKS (size, mtime when seen), so a scan skips them until they change.
        self._unsyncable: dict[tuple[str, str], tuple[int, int]] = {}

    def file(self, ref_id: str, name: str) -> Path:
        return folder.attachment_file(self.library.path, ref_id, name)

    def attach(
        self, ref: str, source: Path, name: str | None = None, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Copy a file into the library as an attachment of a reference (replacing one of that name)."""
        library = self.library
        ref_id = library.refs.resolve(ref)
        source = Path(source)
        name = validate_name(name or source.name)
        if not source.is_file():
            raise FileProblem(f"The file {source} does not exist or is not a regular file.")
        target = self.file(ref_id, name)
        # The copy lands in a file of p2psync's own; it is renamed into place inside the
        # transaction that records it, so a crash leaves either the old or the new version.
        staging = folder.incoming_path(library, name)
        copy_atomic(source, staging, progress)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            manifest = manifest_of(staging)  # what other devices fetch it by (model/chunking.py)
            size, digest = manifest["size"], manifest["sha256"]
            with library.writing() as writer:
                library.refs.state(ref_id)  # the reference must still exist
                entries = self.entries(ref_id, name)
                if registers.changed(entries, manifest):
                    writer.log(ops.attachment_put(ref_id, name, manifest, registers.dots(entries)))
                os.replace(staging, target)
                self.record_file(ref_id, name, target, manifest)
        finally:
            folder.remove_incoming(staging)
        fsync_dir(target.parent)
        return {"ref": ref_id, "name": name, "size": size, "sha256": digest, "path": str(target)}

    def entries(self, ref_id: str, name: str) -> list[registers.Entry]:
        """The register of one attachment (empty if it never existed)."""
        row = self.library.db.execute(
            "SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]
        ).fetchone()
        entries: list[registers.Entry] = json.loads(row[0]) if row else []
        return entries

    def record_file(
        self, ref_id: str, name: str, path: Path, manifest: dict[str, Any], mtime_ns: int | None = None
    ) -> None:
        """Note a file on disk as holding `manifest` (inside a write transaction); `mtime_ns`: the
        mtime the manifest was read at, if known (a later write then shows as a change)."""
        db = self.library.db
        previous = db.execute(
            "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
        ).fetchone()
        db.execute(
            "INSERT INTO attachment_files (ref_id, name, size, sha256, mtime_ns) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ref_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
            "mtime_ns = excluded.mtime_ns",
            [
                ref_id,
                name,
                manifest["size"],
                manifest["sha256"],
                path.stat().st_mtime_ns if mtime_ns is None else mtime_ns,
            ],
        )
        transfers.index_chunks(db, manifest)
        if previous and previous[0] != manifest["sha256"]:
            transfers.forget_unused(db, previous[0])

    def listing(self, ref: str, scan: bool = True) -> list[dict[str, Any]]:
        """A reference's attachments, with whether each file is here and current."""
        ref_id = self.library.refs.resolve(ref)
        if scan:
            self.scan(ref_id)
        rows = self.library.db.execute(
            "SELECT a.name, a.size, a.sha256, a.conflict, f.sha256 FROM attachments a "
            "LEFT JOIN attachment_files f ON f.ref_id = a.ref_id AND f.name = a.name "
            "WHERE a.ref_id = ? AND (a.sha256 IS NOT NULL OR a.conflict = 1) ORDER BY a.name",
            [ref_id],
        ).fetchall()
        out = []
        versions = self.conflicts(ref_id)
        for name, size, digest, conflict, local_digest in rows:
            here = self.file(ref_id, name).is_file()
            present = local_digest is not None and local_digest == digest and here
            item = {
                "name": name,
                "size": size,
                "sha256": digest,
                "conflict": bool(conflict),
                "present": present,
                "path": str(self.file(ref_id, name)),
            }
            if (ref_id, name) in self._unsyncable:
                item["problem"] = "edited past about 1.5 GB: the other devices keep the last version that fitted"
            if conflict:  # every version, and where its file is until the conflict is resolved
                entries = versions.get(ATTACHMENT_FIELD + name, [])
                shown = registers.resolve(entries).value
                item["versions"] = [
                    {
                        "device": e[0],
                        "time": iso(e[2]),
                        **(self.version_file(ref_id, ATTACHMENT_FIELD + name, e[3], shown) or {"removed": True}),
                    }
                    for e in entries
                ]
            out.append(item)
        return out

    def conflicts(self, ref_id: str) -> dict[str, list[registers.Entry]]:
        """'attachment:NAME' -> the register's entries, for each attachment of ref_id in conflict."""
        rows = self.library.db.execute(
            "SELECT name, state FROM attachments WHERE ref_id = ? AND conflict = 1 ORDER BY name", [ref_id]
        ).fetchall()
        return {ATTACHMENT_FIELD + name: json.loads(state) for name, state in rows}

    def version_file(self, ref_id: str, field: str, manifest: Any, shown: Any) -> dict[str, Any] | None:
        """One version of a conflicted attachment: its size, hash and where its file is (if here)."""
        if not isinstance(manifest, dict):
            return None  # this version removed the attachment
        name = field[len(ATTACHMENT_FIELD) :]
        if isinstance(shown, dict) and shown["sha256"] == manifest["sha256"]:
            path = self.file(ref_id, name)
            here = bool(
                self.library.db.execute(
                    "SELECT 1 FROM attachment_files WHERE ref_id = ? AND name = ? AND sha256 = ?",
                    [ref_id, name, manifest["sha256"]],
                ).fetchone()
            )
        else:
            path = folder.version_path(self.library, ref_id, manifest["sha256"])
            here = path.is_file()
        return {"size": manifest["size"], "sha256": manifest["sha256"], "path": str(path), "present": here}

    def _row(self, ref: str, name: str) -> tuple[str, dict[str, Any]]:
        ref_id = self.library.refs.resolve(ref)
        for item in self.listing(ref_id):
            if item["name"] == name:
                return ref_id, item
        raise UnknownAttachment(
            f"Reference {ref_id} has no attachment named {name!r}; see 'p2psync attachment list {ref_id}'."
        )

    def path(self, ref: str, name: str) -> Path:
        """Where the file is, once it is on this machine."""
        ref_id, item = self._row(ref, name)
        if not item["present"]:
            raise UnknownAttachment(f"The file {name!r} is not on this machine yet; sync to fetch it.")
        return self.file(ref_id, name)

    def export(self, ref: str, name: str, out: Path) -> dict[str, Any]:
        """Write a byte-identical copy of an attachment to `out` (a file or a folder)."""
        source = self.path(ref, name)
        out = Path(out)
        if out.is_dir():
            out = out / name
        size, digest = copy_atomic(source, out)
        _, item = self._row(ref, name)
        if digest != item["sha256"]:
            out.unlink(missing_ok=True)
            raise LibraryCorrupt(f"The attachment {name!r} changed while being exported; try again.")
        return {"name": name, "size": size, "sha256": digest, "path": str(out)}

    def remove(self, ref: str, name: str) -> None:
        ref_id, _ = self._row(ref, name)
        db = self.library.db
        with self.library.writing() as writer:
            entries = self.entries(ref_id, name)
            writer.log(ops.attachment_put(ref_id, name, None, registers.dots(entries)))
            row = db.execute(
                "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
            ).fetchone()
            db.execute("DELETE FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name])
            if row:
                transfers.forget_unused(db, row[0])
        self.file(ref_id, name).unlink(missing_ok=True)
        transfers.reconcile(self.library)  # other versions of a conflict, partial files: their space is freed too
        with contextlib.suppress(OSError):
            self.file(ref_id, name).parent.rmdir()  # only if now empty

    def record_local_edits(self) -> list[dict[str, Any]]:
        """Record attachment files edited in place as new versions. Every path that seals this
        device's changes or applies a peer's calls this first (store/sync.py, store/rebase.py), so
        that an annotation made here and one made elsewhere meet as a conflict. While a merge
        waits (store/rebase.py) the attachments are set aside: nothing is recorded until then."""
        if self.library.db.execute("SELECT 1 FROM merge_stash LIMIT 1").fetchone() is not None:
            return []
        return self.scan()

    def scan(self, ref_id: str | None = None, files: Collection[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Notice attachment files changed in place (size and mtime first, then the hash): all of
        them, those of `ref_id`, or only `files` ((ref_id, name) pairs: the daemon's watcher names
        the files the operating system saw touched, p2psync/watching.py).

        A changed file is recorded as a new version of that attachment, from a stable read only: a
        file that changed while it was being hashed (a PDF viewer still saving) is reported as
        'unsettled' and left for the next look, never recorded half written. A missing one is only
        reported (a file deleted by accident must not delete the attachment on every machine).
        """
        db = self.library.db
        sql = "SELECT ref_id, name, size, sha256, mtime_ns FROM attachment_files"
        if files is not None:
            rows = []
            for pair in sorted(set(files)):
                row = db.execute(sql + " WHERE ref_id = ? AND name = ?", list(pair)).fetchone()
                if row is not None:  # a file the library does not know is not an attachment
                    rows.append(row)
        else:
            rows = db.execute(sql + (" WHERE ref_id = ?" if ref_id else ""), [ref_id] if ref_id else []).fetchall()
        found: list[dict[str, Any]] = []
        changed: list[tuple[Any, os.stat_result]] = []
        # Every seal and receive runs this: one os.stat on a text path per file (a Path is made
        # only for a file that changed), about 5 us a file instead of 15-20.
        top = f"{self.library.path / folder.ATTACHMENTS_DIR}{os.sep}"
        for row in rows:
            r_id, name, size, _digest, mtime_ns = row
            try:
                stat = os.stat(f"{top}{r_id}{os.sep}{name}")
            except FileNotFoundError:
                found.append({"ref": r_id, "name": name, "change": "missing"})
                continue
            if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
                continue
            if self._unsyncable.get((r_id, name)) != (stat.st_size, stat.st_mtime_ns):
                changed.append((row, stat))
        edited: list[tuple[tuple[str, str, int, str, int], dict[str, Any], int]] = []
        for (row, stat), read in zip(changed, _read_all([self.file(r[0], r[1]) for r, _ in changed]), strict=True):
            r_id, name = row[0], row[1]
            if isinstance(read, FileNotFoundError):
                found.append({"ref": r_id, "name": name, "change": "missing"})
            elif isinstance(read, InvalidValue):  # grown past what a manifest can describe: keep the last version
                self._unsyncable[(r_id, name)] = (stat.st_size, stat.st_mtime_ns)
                found.append({"ref": r_id, "name": name, "change": "too_large", "error": read.message})
            elif read is None:
                found.append({"ref": r_id, "name": name, "change": "unsettled"})
            else:
                edited.append((row, *read))
        if edited:
            found += self._record_edits(edited)
        return found

    def _record_edits(
        self, edited: list[tuple[tuple[str, str, int, str, int], dict[str, Any], int]]
    ) -> list[dict[str, Any]]:
        """Record files read whole (one transaction for all: a burst of saves costs one commit)."""
        found = []
        db = self.library.db
        with self.library.writing() as writer:
            for (r_id, name, size, digest, mtime_ns), manifest, read_mtime in edited:
                # Another process (an attach, a one-shot sync landing a fetched file) may have put
                # a file in place and recorded it since this scan read the record: then what was
                # hashed is that file, not an edit. Left for the next look, against the new record.
                now = db.execute(
                    "SELECT size, sha256, mtime_ns FROM attachment_files WHERE ref_id = ? AND name = ?", [r_id, name]
                ).fetchone()
                if now is None or tuple(now) != (size, digest, mtime_ns):
                    continue
                if manifest["sha256"] != digest:
                    entries = self.entries(r_id, name)
                    # The edit was made to the version this file held (`digest`) and replaces
                    # only that one. If a peer's version replaced it in the register meanwhile,
                    # the two edits are concurrent: a conflict with both kept, never a loss.
                    base = [e for e in entries if isinstance(e[3], dict) and e[3]["sha256"] == digest]
                    if registers.changed(entries, manifest):
                        writer.log(ops.attachment_put(r_id, name, manifest, registers.dots(base)))
                    found.append({"ref": r_id, "name": name, "change": "modified", "size": manifest["size"]})
                self.record_file(r_id, name, self.file(r_id, name), manifest, read_mtime)
        return found


ReadResult = tuple[dict[str, Any], int] | None | FileNotFoundError | InvalidValue
HASH_THREADS = 4  # files hashed at once by one scan (chunking and SHA-256 run without the GIL)


def _read_all(paths: list[Path]) -> list[ReadResult]:
    """stable_manifest of each file, several at a time: a burst of saved files is read on every
    core (pyfastcdc and hashlib release the GIL), in the order given."""

    def read(path: Path) -> ReadResult:
        try:
            return stable_manifest(path)
        except (FileNotFoundError, InvalidValue) as exc:
            return exc

    threads = min(len(paths), HASH_THREADS, os.cpu_count() or 1)
    if threads <= 1:
        return [read(path) for path in paths]
    with ThreadPoolExecutor(threads, thread_name_prefix="p2psync-hash") as pool:
        return list(pool.map(read, paths))


# A file's mtime only moves on in steps of the kernel's clock tick (1 to 10 ms on Linux): a write
# within the same tick as the look before the read would leave size and mtime as they were.
RACY_NS = 20_000_000


def stable_manifest(path: Path) -> tuple[dict[str, Any], int] | None:
    """The manifest of a file and the mtime it describes, if the file stayed the same while it was
    read (size, mtime, ctime and inode before and after); None if it changed meanwhile. A file
    written within RACY_NS of the first look is given that long first, so that a write in the
    same clock tick cannot go unseen."""
    before = os.stat(path)
    age = time.time_ns() - before.st_mtime_ns
    if 0 <= age < RACY_NS:
        time.sleep((RACY_NS - age) / 1e9)
        before = os.stat(path)
    manifest = manifest_of(path)
    after = os.stat(path)
    if _identity(before) != _identity(after) or manifest["size"] != after.st_size:
        return None
    return manifest, after.st_mtime_ns


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
