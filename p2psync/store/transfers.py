"""Attachment files on this disk against the manifests the library holds (protocol/attachments.md).

The attachment files themselves are the chunk store: a chunk is found by its SHA-256 in
`chunk_index`, which says which whole file holds it and where, so no second copy of anything is
kept. A version that is not here yet is fetched into a partial file
(`attachments/.p2psync/partial/REF-SHA256`) and renamed into place, inside the transaction that
records it, only when every chunk was verified. A conflicted attachment keeps its other versions
in `attachments/.p2psync/versions/REF/SHA256` until the conflict is resolved, and a file being
attached is copied into `attachments/.p2psync/incoming/` first. That folder is on the same disk as
the attachments (so a rename moves a file into place) yet out of reach of every attachment: those
are `attachments/REF/NAME`, and no reference id is `.p2psync` (nor may a name start with it,
model/attachments.py). Where each of these files is, and the move from the layout of earlier
versions, is store/folder.py.

Everything here runs on the library's thread; the bytes are moved by net/chunks.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from p2psync.engine import clock, registers
from p2psync.store.chunk_index import Location as Location  # (re-exported: read here by net/ and tests)
from p2psync.store.chunk_index import forget_unused, index_chunks
from p2psync.store.chunk_index import locate as locate
from p2psync.store.chunk_index import open_indexed as open_indexed
from p2psync.store.chunk_index import read_chunks as read_chunks
from p2psync.store.db import Database, write_transaction
from p2psync.store.files import fsync_dir
from p2psync.store.folder import (
    partial_path,
    remove_if_empty,
    remove_ref_files,
    tidy_incoming,
    version_path,
    work_dir,
)


class Missing(StrEnum):
    """Why an attachment version is not on this disk (stored as its text in attachment_missing,
    and shown in `status --json`)."""

    NO_PEER = "no_peer"
    UNREACHABLE = "unreachable"
    VERIFICATION = "verification"
    DISK_FULL = "disk_full"
    MANIFEST = "manifest"
    NO_CHUNKS = "no_chunks"


REASONS = {
    Missing.NO_PEER: "no device reached has it",
    Missing.UNREACHABLE: "the devices that have it could not be reached",
    Missing.VERIFICATION: "what a device sent failed verification",
    Missing.DISK_FULL: "no space left on this disk",
    Missing.MANIFEST: "its chunks do not make up the file its manifest names (a fault of the device that attached it)",
    Missing.NO_CHUNKS: (
        "it was attached by a p2psync older than attachment sync; attach the file again on the device that has it"
    ),
}


# --- files forgotten ----------------------------------------------------------------------------


def forget_ref(db: Database, ref_id: str) -> None:
    """A reference's files are about to be removed from disk (inside a write transaction)."""
    shas = {r[0] for r in db.execute("SELECT sha256 FROM attachment_files WHERE ref_id = ?", [ref_id])}
    shas |= {r[0] for r in db.execute("SELECT sha256 FROM attachment_versions WHERE ref_id = ?", [ref_id])}
    db.execute("DELETE FROM attachment_files WHERE ref_id = ?", [ref_id])
    db.execute("DELETE FROM attachment_versions WHERE ref_id = ?", [ref_id])
    db.execute("DELETE FROM attachment_missing WHERE ref_id = ?", [ref_id])
    for sha in shas:
        forget_unused(db, sha)


# --- what this machine lacks ------------------------------------------------------------------


@dataclass
class Need:
    """One version of an attachment that is not on this disk yet."""

    ref_id: str
    name: str
    sha256: str
    size: int
    chunks: list[list[Any]]
    partial: str  # where it is assembled

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref_id, "name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class MissingFile:
    """A version a fetch could not bring, and why: in the LAN's and the relay's fetch reports."""

    ref: str
    name: str
    sha256: str
    size: int
    reason: Missing
    detail: str

    @classmethod
    def of(cls, need: Need, reason: Missing, detail: str) -> MissingFile:
        return cls(need.ref_id, need.name, need.sha256, need.size, reason, detail)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _registers(library: Any) -> list[tuple[str, str, str | None, list[registers.Entry]]]:
    rows = library.db.execute(
        "SELECT a.ref_id, a.name, a.sha256, a.state FROM attachments a JOIN refs r ON r.id = a.ref_id "
        "WHERE r.deleted = 0 ORDER BY a.ref_id, a.name"
    ).fetchall()
    return [(ref_id, name, sha, json.loads(state)) for ref_id, name, sha, state in rows]


def _wanted(entries: list[registers.Entry]) -> dict[str, dict[str, Any]]:
    """sha256 -> manifest, for every version a register holds (all of them while in conflict)."""
    return {e[3]["sha256"]: e[3] for e in entries if isinstance(e[3], dict)}


@dataclass(frozen=True)
class Wanted:
    """The versions one attachment's register wants on this disk: the one shown and, while in
    conflict, every other. Read from the row's columns: a register's JSON (every chunk of every
    version, about 13 KB per 5 MB file) is parsed only while in conflict or for a version that
    must be fetched (parsing them all took most of a delta's `needs` on a 200-file library)."""

    ref_id: str
    name: str
    shown: str | None
    shas: tuple[str, ...]  # (in the register's order)

    def manifest(self, library: Any, sha: str) -> dict[str, Any] | None:
        """The version's manifest as the register holds it now; None if the register has moved on
        since this Wanted was read (another process, a `p2psync attach` say, wrote meanwhile):
        that version is no longer wanted, and the next look sees what is."""
        row = library.db.execute(
            "SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [self.ref_id, self.name]
        ).fetchone()
        return _wanted(json.loads(row[0])).get(sha) if row else None


def _wanted_shas(shown: str | None, conflict: int, state: Callable[[], str]) -> tuple[str, ...]:
    # Without a conflict every entry holds the same value (registers.resolve): the one shown.
    if not conflict:
        return (shown,) if shown else ()
    return tuple(_wanted(json.loads(state())))


def _wanted_now(library: Any) -> dict[tuple[str, str], Wanted]:
    """(ref_id, name) -> Wanted, for every attachment of a reference not deleted."""
    out: dict[tuple[str, str], Wanted] = {}
    db = library.db
    for ref_id, name, shown, conflict in db.execute(
        "SELECT a.ref_id, a.name, a.sha256, a.conflict FROM attachments a JOIN refs r ON r.id = a.ref_id "
        "WHERE r.deleted = 0 ORDER BY a.ref_id, a.name"
    ).fetchall():

        def state(ref_id: str = ref_id, name: str = name) -> str:
            row = db.execute("SELECT state FROM attachments WHERE ref_id = ? AND name = ?", [ref_id, name]).fetchone()
            return str(row[0]) if row else "[]"  # (gone meanwhile: nothing wanted)

        out[(ref_id, name)] = Wanted(ref_id, name, shown, _wanted_shas(shown, conflict, state))
    return out


def _held(library: Any) -> set[tuple[str, str, str]]:
    """(ref_id, name, sha256) of every version on this disk, shown or kept aside."""
    db = library.db
    return {tuple(r) for r in db.execute("SELECT ref_id, name, sha256 FROM attachment_files")} | {
        tuple(r) for r in db.execute("SELECT ref_id, name, sha256 FROM attachment_versions")
    }


T = TypeVar("T")


def travel_once(wanted: list[T], sha256: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """The same version wanted twice (one PDF attached to two references) travels once: the first
    of each version, to fetch, and the others, to copy from it once it is in place."""
    firsts: dict[str, T] = {}
    for item in wanted:
        firsts.setdefault(sha256(item), item)
    return list(firsts.values()), [item for item in wanted if firsts[sha256(item)] is not item]


def needs(library: Any) -> list[Need]:
    """Every version this machine should hold and does not, after tidying what it holds."""
    # Edits made in place become versions before anything is replaced; a file deleted from this
    # disk by hand is fetched again (its attachment stays: the deletion was not a decision).
    for change in library.scan_attachments():
        if change["change"] == "missing":
            _forget_file(library, change["ref"], change["name"])
    for ref_id, name, sha in library.db.execute("SELECT ref_id, name, sha256 FROM attachment_versions").fetchall():
        if not version_path(library, ref_id, sha).is_file():
            _drop_version(library, ref_id, name, sha)
    registers_now = _wanted_now(library)
    reconcile(library, registers_now)
    out: list[Need] = []
    missing_chunks: list[tuple[str, str, str, Missing]] = []
    # A version whose chunks, all verified, did not make up its file would only come out the same again.
    broken = set(library.db.execute("SELECT ref_id, name, sha256 FROM attachment_missing WHERE reason = 'manifest'"))
    held = _held(library)
    for wanted in registers_now.values():
        ref_id, name = wanted.ref_id, wanted.name
        for sha in wanted.shas:
            if (ref_id, name, sha) in held or (ref_id, name, sha) in broken:
                continue
            manifest = wanted.manifest(library, sha)
            if manifest is None:
                continue
            if not manifest.get("chunks") and manifest["size"] > 0:
                missing_chunks.append((ref_id, name, sha, Missing.NO_CHUNKS))
                continue
            out.append(
                Need(
                    ref_id,
                    name,
                    sha,
                    manifest["size"],
                    manifest.get("chunks", []),
                    str(partial_path(library, ref_id, sha)),
                )
            )
    for ref_id, name, sha, reason in missing_chunks:
        record_missing(library, ref_id, name, sha, reason, REASONS[reason])
    return out


def _forget_file(library: Any, ref_id: str, name: str) -> None:
    with write_transaction(library.db):
        row = library.db.execute(
            "SELECT sha256 FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
        ).fetchone()
        library.db.execute("DELETE FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name])
        if row:
            forget_unused(library.db, row[0])


def _have_version(library: Any, ref_id: str, name: str, sha: str) -> bool:
    if library.db.execute(
        "SELECT 1 FROM attachment_files WHERE ref_id = ? AND name = ? AND sha256 = ?", [ref_id, name, sha]
    ).fetchone():
        return True
    return bool(
        library.db.execute(
            "SELECT 1 FROM attachment_versions WHERE ref_id = ? AND name = ? AND sha256 = ?", [ref_id, name, sha]
        ).fetchone()
    )


def reconcile(library: Any, registers_now: dict[tuple[str, str], Wanted] | None = None) -> dict[str, int]:
    """Make the files on disk follow the registers (`registers_now`, if just read): the version
    shown at the attachment's path, the other versions of a conflict beside it, nothing that no
    register holds any more (space is freed at once: the files are the only copy). Files of
    permanently deleted references go too."""
    removed = moved = 0
    db = library.db
    for (ref_id,) in db.execute(
        "SELECT DISTINCT f.ref_id FROM (SELECT ref_id FROM attachment_files UNION SELECT ref_id FROM "
        "attachment_versions) f LEFT JOIN refs r ON r.id = f.ref_id WHERE r.id IS NULL OR r.deleted = 1"
    ).fetchall():
        with write_transaction(db):
            forget_ref(db, ref_id)
        remove_ref_files(library, ref_id)
        removed += 1
    if registers_now is None:  # (needs() reads them once for both)
        registers_now = _wanted_now(library)
    none = Wanted("", "", None, ())
    # Files whose attachment no longer exists (deleted, here or elsewhere).
    for ref_id, name, sha in db.execute("SELECT ref_id, name, sha256 FROM attachment_files").fetchall():
        if not registers_now.get((ref_id, name), none).shas:
            with write_transaction(db):
                db.execute("DELETE FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name])
                forget_unused(db, sha)
            Path(library.attachment_file(ref_id, name)).unlink(missing_ok=True)
            removed += 1
    for ref_id, name, sha in db.execute("SELECT ref_id, name, sha256 FROM attachment_versions").fetchall():
        wanted = registers_now.get((ref_id, name), none)
        if sha not in wanted.shas:
            _drop_version(library, ref_id, name, sha)
            removed += 1
        elif sha == wanted.shown:
            _promote(library, ref_id, name, sha, wanted)
            moved += 1
    tidy_incoming(library)
    # Partial files of versions nobody wants any more (only p2psync's own folder is looked at).
    for partial in (work_dir(library.path) / "partial").glob("*-*"):
        ref_id, _, sha = partial.name.partition("-")
        wanted = registers_now.get((ref_id, _name_of(registers_now, ref_id, sha)), none)
        if sha not in wanted.shas or _have_any(library, ref_id, sha):
            partial.unlink(missing_ok=True)
    with write_transaction(db):
        for ref_id, name, sha in db.execute("SELECT ref_id, name, sha256 FROM attachment_missing").fetchall():
            if sha not in registers_now.get((ref_id, name), none).shas or _have_version(library, ref_id, name, sha):
                db.execute(
                    "DELETE FROM attachment_missing WHERE ref_id = ? AND name = ? AND sha256 = ?", [ref_id, name, sha]
                )
    return {"removed": removed, "moved": moved}


def _name_of(registers_now: dict[tuple[str, str], Wanted], ref_id: str, sha: str) -> str:
    for (r, name), wanted in registers_now.items():
        if r == ref_id and sha in wanted.shas:
            return name
    return ""


def _have_any(library: Any, ref_id: str, sha: str) -> bool:
    return bool(
        library.db.execute(
            "SELECT 1 FROM attachment_files WHERE ref_id = ? AND sha256 = ? UNION ALL "
            "SELECT 1 FROM attachment_versions WHERE ref_id = ? AND sha256 = ?",
            [ref_id, sha, ref_id, sha],
        ).fetchone()
    )


def _drop_version(library: Any, ref_id: str, name: str, sha: str) -> None:
    with write_transaction(library.db):
        library.db.execute(
            "DELETE FROM attachment_versions WHERE ref_id = ? AND name = ? AND sha256 = ?", [ref_id, name, sha]
        )
        forget_unused(library.db, sha)
    version_path(library, ref_id, sha).unlink(missing_ok=True)
    remove_if_empty(version_path(library, ref_id, sha).parent)


def _promote(library: Any, ref_id: str, name: str, sha: str, wanted: Wanted) -> None:
    """The version kept aside is now the one shown: it takes the attachment's path; the file
    there, if another version still wanted, goes aside in its place."""
    main = Path(library.attachment_file(ref_id, name))
    source = version_path(library, ref_id, sha)
    db = library.db
    with write_transaction(db):
        manifest = wanted.manifest(library, sha)
        if manifest is None:  # the register moved on meanwhile: the next look promotes what it holds
            return
        current = db.execute(
            "SELECT sha256, size FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name]
        ).fetchone()
        if current and current[0] in wanted.shas and main.exists():
            aside = version_path(library, ref_id, current[0])
            os.replace(main, aside)
            _keep_version(db, ref_id, name, current[0], current[1], aside)
        main.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, main)
        db.execute("DELETE FROM attachment_versions WHERE ref_id = ? AND name = ? AND sha256 = ?", [ref_id, name, sha])
        db.execute(
            "INSERT INTO attachment_files (ref_id, name, size, sha256, mtime_ns) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ref_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
            "mtime_ns = excluded.mtime_ns",
            [ref_id, name, manifest["size"], sha, main.stat().st_mtime_ns],
        )
        if current and current[0] not in wanted.shas:
            forget_unused(db, current[0])
    fsync_dir(source.parent)
    remove_if_empty(source.parent)
    fsync_dir(main.parent)


def _keep_version(db: Database, ref_id: str, name: str, sha: str, size: int, path: Path) -> None:
    db.execute(
        "INSERT OR REPLACE INTO attachment_versions (ref_id, name, sha256, size, mtime_ns) VALUES (?, ?, ?, ?, ?)",
        [ref_id, name, sha, size, path.stat().st_mtime_ns],
    )


HASH_BLOCK = 1 << 20  # bytes read at a time to hash a whole file


def seal_partial(need: Need, digest: Any = None, hashed: int = 0) -> bool:
    """Give a partial file whose every chunk is written its length and fsync it; whether it is,
    as a whole, the file the manifest names. `digest` (a hashlib.sha256) has already seen the
    file's first `hashed` bytes as they were written; only the rest is read back. If the file is
    not the one named, it is removed: the same chunks would only make the same wrong file again
    (reason 'manifest')."""
    path = Path(need.partial)
    whole = digest if digest is not None else hashlib.sha256()
    at = hashed if digest is not None else 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, need.size)  # (a no-op unless the file is empty or was longer)
        while block := os.pread(fd, HASH_BLOCK, at):
            whole.update(block)
            at += len(block)
        os.fsync(fd)
    finally:
        os.close(fd)
    if whole.hexdigest() != need.sha256:
        path.unlink(missing_ok=True)
        return False
    return True


def finish(library: Any, need: Need) -> str:
    """A partial file is whole and verified (and fsynced): put it in place and record it, in one
    transaction. Returns where it went ('shown', 'kept' for a conflict's other version, or
    'dropped' if no register wants it any more)."""
    return finish_all(library, [need])[0]


def finish_all(library: Any, needs: list[Need]) -> list[str]:
    """finish() for several files in one transaction, each folder fsynced once afterwards (a
    first sync lands hundreds of files: a commit and three folder fsyncs each cost more than the
    bytes). If placing one fails, the files already moved go back and none is recorded."""
    for ref_id in dict.fromkeys(need.ref_id for need in needs):
        library.scan_attachments(ref_id)  # an edit in place made meanwhile is kept as a version first
    out: list[str] = []
    folders: set[Path] = set()
    moves: list[tuple[Path, Path]] = []  # (from, to), to undo them if the transaction fails
    try:
        with write_transaction(library.db):
            for need in needs:
                out.append(_place(library, need, moves, folders))
    except BaseException:
        for source, target in reversed(moves):
            with contextlib.suppress(OSError):
                os.replace(target, source)
        raise
    for folder in folders:
        fsync_dir(folder)  # (a folder that is not there is skipped)
    return out


def _place(library: Any, need: Need, moves: list[tuple[Path, Path]], folders: set[Path]) -> str:
    """Move one whole partial file where it belongs and record it (inside finish_all's transaction)."""
    partial = Path(need.partial)
    db = library.db
    row = db.execute(
        "SELECT a.sha256, a.conflict, a.state FROM attachments a JOIN refs r ON r.id = a.ref_id "
        "WHERE a.ref_id = ? AND a.name = ? AND r.deleted = 0",
        [need.ref_id, need.name],
    ).fetchone()
    wanted = _wanted_shas(row[0], row[1], lambda: str(row[2])) if row else ()
    if need.sha256 not in wanted:
        partial.unlink(missing_ok=True)
        return "dropped"
    main = Path(library.attachment_file(need.ref_id, need.name))

    def move(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        moves.append((source, target))
        folders.update((source.parent, target.parent))

    current = db.execute(
        "SELECT sha256, size FROM attachment_files WHERE ref_id = ? AND name = ?", [need.ref_id, need.name]
    ).fetchone()
    if row[0] == need.sha256 or current is None:
        if current and current[0] in wanted and current[0] != need.sha256 and main.exists():
            aside = version_path(library, need.ref_id, current[0])  # a conflict's other side stays
            move(main, aside)
            _keep_version(db, need.ref_id, need.name, current[0], current[1], aside)
        move(partial, main)
        db.execute(
            "INSERT INTO attachment_files (ref_id, name, size, sha256, mtime_ns) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ref_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
            "mtime_ns = excluded.mtime_ns",
            [need.ref_id, need.name, need.size, need.sha256, main.stat().st_mtime_ns],
        )
        if current and current[0] not in wanted:
            forget_unused(db, current[0])
        where = "shown"
    else:
        target = version_path(library, need.ref_id, need.sha256)
        move(partial, target)
        _keep_version(db, need.ref_id, need.name, need.sha256, need.size, target)
        where = "kept"
    index_chunks(db, {"sha256": need.sha256, "chunks": need.chunks})  # (the manifest's own)
    db.execute(
        "DELETE FROM attachment_missing WHERE ref_id = ? AND name = ? AND sha256 = ?",
        [need.ref_id, need.name, need.sha256],
    )
    return where


def record_missing(library: Any, ref_id: str, name: str, sha: str, reason: Missing, detail: str) -> None:
    with write_transaction(library.db):
        library.db.execute(
            "INSERT OR REPLACE INTO attachment_missing (ref_id, name, sha256, reason, detail, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [ref_id, name, sha, reason, detail, clock.now_ms()],
        )


def missing(library: Any) -> list[dict[str, Any]]:
    """Attachments this machine should hold and does not, with the reason a sync last gave."""
    reasons = {
        (r, n, s): (reason, detail, at)
        for r, n, s, reason, detail, at in library.db.execute(
            "SELECT ref_id, name, sha256, reason, detail, at FROM attachment_missing"
        ).fetchall()
    }
    out = []
    for ref_id, name, _shown, entries in _registers(library):
        for sha, manifest in _wanted(entries).items():
            if _have_version(library, ref_id, name, sha):
                continue
            reason, detail, at = reasons.get(
                (ref_id, name, sha), ("not_synced", "not fetched yet; sync to fetch it", None)
            )
            partial = partial_path(library, ref_id, sha)
            out.append(
                {
                    "ref": ref_id,
                    "name": name,
                    "sha256": sha,
                    "size": manifest["size"],
                    "reason": reason,
                    "detail": detail,
                    "since": at,
                    "partial_bytes": partial.stat().st_size if partial.exists() else 0,
                }
            )
    return out
